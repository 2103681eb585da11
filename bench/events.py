"""Benchmark live event streams: how many watchers a ``nova up`` stack holds while polls
still answer.

Run from the repository root::

    .venv/bin/python bench/events.py                     # the default cap, and no cap
    .venv/bin/python bench/events.py --caps 16

One ``nova up`` stack (2 gunicorn processes x 32 threads, ``nova.gunicorn_config``) without
workers, so an upload waits and its /api/submissions/S/events stream stays open. For each
count N, N clients open that stream at once (each its own connection, reading); then 60
status polls of /api/submissions/S (4 at a time, as several clients would, 5 s limit each)
are timed while the streams stay open. Reported per N: streams accepted, refused with 503,
and the polls' median, 95th percentile and failures. The stack runs once per
NOVA_EVENTS_MAX_WATCHERS value (``--caps``; 32 = a process's every thread, i.e. no cap).
The report is the "Live events" section of bench/RESULTS.md, replaced on each run; raw
figures go to RESULTS-events.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

import run  # noqa: E402  (bench/run.py: the stack, the client, process clean-up)
from batch import write_section  # noqa: E402

COUNTS = (0, 16, 32, 48, 60, 64, 80)
POLLS = 60
POLL_TIMEOUT = 5.0
KEEPALIVE_SECONDS = 2


class Watcher(threading.Thread):
    """One client holding the submission's event stream open until told to stop."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = stop
        self.outcome = ""  # "open" once the first event came, "refused" (503), or an error
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            with requests.get(self.url, stream=True, timeout=(10, 60)) as response:
                if response.status_code != 200:
                    self.outcome = "refused" if response.status_code == 503 else "error"
                    self.ready.set()
                    return
                for line in response.iter_lines():
                    if line.startswith(b"id:"):
                        self.outcome = "open"
                        self.ready.set()
                    if self.stop.is_set():
                        return
        except requests.RequestException as exc:
            self.outcome = self.outcome or f"error: {type(exc).__name__}"
        finally:
            self.ready.set()


def poll_times(base: str, submission_id: int) -> dict[str, Any]:
    def one(_: int) -> float | None:
        started = time.perf_counter()
        try:
            response = requests.get(f"{base}/api/submissions/{submission_id}", timeout=POLL_TIMEOUT)
            response.raise_for_status()
        except requests.RequestException:
            return None
        return time.perf_counter() - started

    with ThreadPoolExecutor(4) as pool:
        times = list(pool.map(one, range(POLLS)))
    answered = sorted(t for t in times if t is not None)
    return {
        "polls": POLLS,
        "failed": POLLS - len(answered),
        "median_ms": round(1000 * statistics.median(answered), 1) if answered else None,
        "p95_ms": round(1000 * answered[int(0.95 * (len(answered) - 1))], 1) if answered else None,
    }


def measure(stack: run.Stack, submission_id: int, count: int) -> dict[str, Any]:
    stop = threading.Event()
    url = f"{stack.base}/api/submissions/{submission_id}/events"
    watchers = [Watcher(url, stop) for _ in range(count)]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        watcher.ready.wait(30)
    outcomes = [watcher.outcome or "no answer" for watcher in watchers]
    polls = poll_times(stack.base, submission_id)
    stop.set()
    # A watcher notices the stop at its stream's next keep-alive: wait them out so the next
    # count starts from a free server.
    for watcher in watchers:
        watcher.join(30)
    # The server lets a stream's place go when its next keep-alive finds the client gone.
    time.sleep(3 * KEEPALIVE_SECONDS)
    return {
        "watchers": count,
        "open": outcomes.count("open"),
        "refused": outcomes.count("refused"),
        "other": len(outcomes) - outcomes.count("open") - outcomes.count("refused"),
        **polls,
    }


def run_cap(cap: int, scratch: Path) -> list[dict[str, Any]]:
    stack = run.Stack(scratch / f"stack-{cap}", workers=0)
    stack.env["NOVA_EVENTS_MAX_WATCHERS"] = str(cap)
    stack.env["NOVA_EVENTS_KEEPALIVE_SECONDS"] = str(KEEPALIVE_SECONDS)
    stack.start()
    try:
        client = run.NovaClient(stack.base, stack.api_key)
        submission_id = client.upload_star_list([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], {})
        rows = []
        for count in COUNTS:
            row = measure(stack, submission_id, count)
            run.log(f"cap {cap}: {row}")
            rows.append({"cap": cap, **row})
        return rows
    finally:
        stack.stop()
        run.kill_everything_we_started()


def report(results: dict[str, Any]) -> str:
    lines = [
        "## Live events: watchers held while polls answer",
        "",
        f"{results['date']}, commit {results['commit']}, load {results['load_before']} before, "
        f"{results['load_after']} after, {os.cpu_count()} cores. `nova up` with 2 gunicorn "
        "processes × 32 threads and no worker (the upload waits, its stream stays open); "
        f"N clients hold /api/submissions/S/events open while {POLLS} polls of "
        "/api/submissions/S (4 at a time, 5 s limit) are timed.",
        "",
        "| NOVA_EVENTS_MAX_WATCHERS | watchers | streams open | refused (503) | other | "
        "poll median ms | poll p95 ms | polls failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['cap']} | {row['watchers']} | {row['open']} | {row['refused']} | "
            f"{row['other']} | {row['median_ms']} | {row['p95_ms']} | {row['failed']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args()
    run.become_subreaper()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": run.software_info().get("nova commit", "?"),
        "load_before": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="nova-bench-events-") as scratch:
        for cap in args.caps:
            results["rows"] += run_cap(cap, Path(scratch))
    results["load_after"] = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    text = report(results)
    write_section(args.out, text)
    (args.out.parent / "RESULTS-events.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
