"""Benchmark a time series: 100 star lists as one /api/upload_batch vs one by one.

Run from the repository root::

    .venv/bin/python bench/batch.py                 # both cases: blind and scale-hinted
    .venv/bin/python bench/batch.py --hints scale   # one case only

The frames are generated as the tests generate them (tests/support/starfields.py): 1024 x 768 px, a
2 degree field from the Tycho-2 index stars, about 2 px of drift and 0.01 degree of turn per
frame. One ``nova up`` stack with 2 workers serves both ways, in the same run:

* batch: the first byte of the ``/api/upload_batch`` request to ``/api/batches/B`` saying
  ``"done"`` (polled every 0.2 s);
* one by one: the first byte of the first of 100 ``/api/upload`` requests (sent one after
  the other, as fast as the server answers) to the last of the 100 jobs ending, polling
  ``/api/submissions/N`` and ``/api/jobs/J`` as nova's clients do.

Both send the same ``request-json`` (the image size, plus a ±10 % scale hint in the
"scale" case). Every solution is checked against the frame's truth (within 1 px). Besides
wall time, the CPU seconds the whole stack used are measured: the machine is shared, and
wall time grows with other people's work. The report is the time-series section of
bench/RESULTS.md (``--out``), replaced on each run; raw figures go to RESULTS-batch.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from astropy.io import fits

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]

import run  # noqa: E402  (bench/run.py: the stack, the client, process clean-up)

from tests.support.starfields import Frame, pixel_error, sequence  # noqa: E402

FRAMES = 100
WIDTH, HEIGHT = 1024, 768
FIELD_DEGREES = 2.0
POLL = 0.2
TIMEOUT = 1800.0
TARGET_SECONDS = 10.0
TARGET_SPEEDUP = 5.0


def options(hints: str) -> dict[str, Any]:
    args: dict[str, Any] = {"image_width": WIDTH, "image_height": HEIGHT}
    if hints == "scale":
        # What the observer knows of the camera: its pixel scale, to within 10 %.
        pixscale = FIELD_DEGREES * 3600 / WIDTH
        args |= {"scale_units": "arcsecperpix", "scale_type": "ev"}
        args |= {"scale_est": round(pixscale, 3), "scale_err": 10}
    return args


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stack_cpu(stack: run.Stack) -> float:
    """CPU seconds used so far by the stack (web server, redis, workers, their work horses
    and engine runs): utime + stime of every live process of it, plus what each has collected
    from its children that ended. The machine is shared: this is the figure load does not
    change much, where wall time grows with other people's work."""
    assert stack.process is not None
    total = 0
    for pid in [stack.process.pid, *run.descendants(stack.process.pid)]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def timed(measure: Any, stack: run.Stack, *args: Any) -> dict:
    """Run one way of solving the frames; add the stack's CPU seconds and the load."""
    before = stack_cpu(stack)
    record = measure(*args)
    record["stack_cpu_seconds"] = stack_cpu(stack) - before
    record["load_after"] = os.getloadavg()[0]
    return record


def run_batch(client: run.NovaClient, frames: list[Frame], args: dict[str, Any]) -> dict:
    files = [("file", (frame.name, frame.data, "text/plain")) for frame in frames]
    started = time.perf_counter()
    response = client.http.post(
        client.base + "/api/upload_batch",
        data={"request-json": json.dumps({"session": client.session, **args})},
        files=files,
        timeout=300,
    )
    answer = response.json()
    uploaded = time.perf_counter() - started
    if answer.get("status") != "success":
        raise RuntimeError(f"batch refused: {answer}")
    batch = answer["batch"]
    while True:
        state = client.call(f"/api/batches/{batch}")
        if state["status"] == "done":
            break
        if time.perf_counter() - started > TIMEOUT:
            raise TimeoutError(f"batch {batch} not done: {state['solved']} solved")
        time.sleep(POLL)
    elapsed = time.perf_counter() - started
    archive = zipfile.ZipFile(
        io.BytesIO(client.http.get(f"{client.base}/batch_wcs/{batch}").content)
    )
    errors = []
    for frame in frames:
        name = frame.name.rsplit(".", 1)[0] + ".wcs"
        if name in archive.namelist():
            header = fits.Header.fromstring(archive.read(name).decode("latin-1"))
            assert frame.truth is not None
            errors.append(pixel_error(header, frame.truth, WIDTH, HEIGHT))
    return {
        "seconds": elapsed,
        "upload_seconds": uploaded,
        "solved": state["solved"],
        "failed": state["failed"],
        "worst_error_px": max(errors) if errors else None,
        "batch": batch,
    }


def run_one_by_one(client: run.NovaClient, frames: list[Frame], args: dict[str, Any]) -> dict:
    started = time.perf_counter()
    subids = []
    for frame in frames:
        answer = client.call(
            "/api/upload",
            {"session": client.session, **args},
            files={"file": (frame.name, frame.data, "text/plain")},
        )
        if answer.get("status") != "success":
            raise RuntimeError(f"upload refused: {answer}")
        subids.append(int(answer["subid"]))
    uploaded = time.perf_counter() - started
    deadline = started + TIMEOUT
    jobs: dict[int, int] = {}
    finished: dict[int, str] = {}
    while len(finished) < len(subids):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"one by one: {len(finished)} of {len(subids)} ended")
        for subid in subids:
            if subid in finished:
                continue
            if subid not in jobs:
                job, failed = client.job_of(subid)
                if job is None:
                    if failed:
                        finished[subid] = "failure"
                    continue
                jobs[subid] = job
            status = client.status(jobs[subid])
            if status in ("success", "failure"):
                finished[subid] = status
        time.sleep(POLL)
    elapsed = time.perf_counter() - started
    errors = []
    for subid, frame in zip(subids, frames, strict=True):
        if finished[subid] != "success":
            continue
        text = client.http.get(f"{client.base}/wcs_file/{jobs[subid]}").content
        assert frame.truth is not None
        errors.append(
            pixel_error(fits.Header.fromstring(text.decode("latin-1")), frame.truth, WIDTH, HEIGHT)
        )
    return {
        "seconds": elapsed,
        "upload_seconds": uploaded,
        "solved": sum(status == "success" for status in finished.values()),
        "failed": sum(status == "failure" for status in finished.values()),
        "worst_error_px": max(errors) if errors else None,
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        "## Time series: 100 star lists in one batch vs one by one (issue #17)",
        "",
        f"Generated by `bench/batch.py` on {results['date']} (nova commit {results['commit']}); "
        f"load average before {results['load_before']}, after {results['load_after']}. One "
        "`nova up` stack with 2 workers; 100 frames of 1024 × 768 px, a 2° field, ~2 px drift "
        "and 0.01° turn per frame (tests/support/starfields.py). Time from the first byte of the "
        "first request to the last frame's end; every solution checked against its truth.",
        "",
        "| hints | batch (s) | of which upload (s) | one by one (s) | speed-up "
        "| stack CPU s (batch / one by one) | CPU ratio | solved (batch / one by one) "
        "| worst error (px) | load (1 min) after | ≤ 10 s? | ≥ 5×? |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in results["cases"]:
        batch, single = case["batch"], case["one_by_one"]
        speedup = single["seconds"] / batch["seconds"]
        worst = max(v for v in (batch["worst_error_px"], single["worst_error_px"]) if v is not None)
        lines.append(
            f"| {case['hints']} | {batch['seconds']:.2f} | {batch['upload_seconds']:.2f} | "
            f"{single['seconds']:.2f} | {speedup:.1f}× | {batch['stack_cpu_seconds']:.1f} / "
            f"{single['stack_cpu_seconds']:.1f} | "
            f"{single['stack_cpu_seconds'] / batch['stack_cpu_seconds']:.1f}× | "
            f"{batch['solved']} / {single['solved']} | {worst:.3f} | "
            f"{batch['load_after']:.1f} / {single['load_after']:.1f} | "
            f"{'**yes**' if batch['seconds'] <= TARGET_SECONDS else '**no**'} | "
            f"{'**yes**' if speedup >= TARGET_SPEEDUP else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hints", choices=("blind", "scale", "both"), default="both")
    parser.add_argument(
        "--out",
        type=Path,
        default=BENCH / "RESULTS.md",
        help="report: its time-series section is replaced (or appended); raw figures go to "
        "RESULTS-batch.json beside it",
    )
    args = parser.parse_args()
    run.become_subreaper()
    frames = sequence(FRAMES, width=WIDTH, height=HEIGHT, field_degrees=FIELD_DEGREES)
    cases = ("blind", "scale") if args.hints == "both" else (args.hints,)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": run.software_info().get("nova commit", "?"),
        "load_before": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="nova-bench-batch-") as scratch:
        stack = run.Stack(Path(scratch) / "stack", workers=2)
        # The machine is shared with other developers' un-niced work: niced workers would
        # measure how busy it is, not Nova. Both ways run with the same setting.
        stack.env["NOVA_WORKER_NICE"] = "0"
        stack.start()
        try:
            client = run.NovaClient(stack.base, stack.api_key)
            for hints in cases:
                request = options(hints)
                run.log(f"{hints}: batch of {FRAMES}")
                batch = timed(run_batch, stack, client, frames, request)
                run.log(f"  {batch}")
                run.log(f"{hints}: {FRAMES} one by one")
                single = timed(run_one_by_one, stack, client, frames, request)
                run.log(f"  {single}")
                results["cases"].append({"hints": hints, "batch": batch, "one_by_one": single})
        finally:
            stack.stop()
            run.kill_everything_we_started()
    results["load_after"] = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    text = report(results)
    write_section(args.out, text)
    (args.out.parent / "RESULTS-batch.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)


def write_section(path: Path, section: str) -> None:
    """Put ``section`` (a "## " heading and its text) into the report, replacing the earlier
    run's section of the same heading, so bench/run.py's report and this one share a file."""
    heading = section.splitlines()[0]
    old = path.read_text() if path.exists() else ""
    start = old.find(heading)
    if start < 0:
        path.write_text(old.rstrip("\n") + ("\n\n" if old else "") + section)
        return
    end = old.find("\n## ", start + len(heading))
    rest = old[end + 1 :] if end >= 0 else ""
    path.write_text(old[:start] + section + ("\n" + rest if rest else ""))


if __name__ == "__main__":
    main()
