"""Load: status polls hammered by wrk or threads, and job throughput."""

from __future__ import annotations

import http.client
import json
import math
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from typing import Any

from nova_bench.client import NovaClient, nova_options
from nova_bench.common import APOD, JOB_TIMEOUT, POLL_INTERVAL, THROUGHPUT_PHOTOS

# -- status-poll hammering ------------------------------------------------------------------


WRK_DURATION = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    """wrk's '1.23ms' / '850.00us' / '1.02s' as milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        return float("nan")
    return float(match[1]) * WRK_DURATION[match[2]]


def hammer(port: int, path: str, clients: int, seconds: float) -> dict[str, Any]:
    """GET ``path`` from ``clients`` concurrent connections for ``seconds``: with wrk (a C load
    tool, so the load generator does not eat the cores it measures) when installed, else with
    Python threads."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return hammer_threads(port, path, clients, seconds)
    threads = max(1, min(2, clients))
    done = subprocess.run(
        [wrk, f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--latency", "--timeout", "30s"]
        + [f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    out = done.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)  # not the "71.50%" of a Stdev column
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if done.returncode != 0 or total is None or rate is None:
        raise RuntimeError(f"wrk failed: {done.stderr or out}")
    requests_done = int(total[1])
    bad = int(non_2xx[1]) if non_2xx else 0
    # Read errors on a closed connection are how gunicorn's sync workers end each response
    # under keep-alive; only connect errors and timeouts are failed requests.
    failed = bad + (int(sockets[1]) + int(sockets[4]) if sockets else 0)
    return {
        "tool": "wrk",
        "clients": clients,
        "seconds": seconds,
        "requests": requests_done,
        "errors": failed,
        "rate": float(rate[1]),
        "p50_ms": _wrk_ms(p50[1]) if p50 else float("nan"),
        "p99_ms": _wrk_ms(p99[1]) if p99 else float("nan"),
        "max_ms": _wrk_ms(latency[3]) if latency else float("nan"),
        "statuses": {"HTTP 200": requests_done - bad},
    }


def hammer_threads(port: int, path: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads GET ``path`` back to back for ``seconds``; one connection each."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    statuses: list[Counter[str]] = [Counter() for _ in range(clients)]

    def client(index: int) -> None:
        while not stop.is_set():
            begin = time.perf_counter()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                connection.close()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok, body = False, b""
            elapsed = time.perf_counter() - begin
            if ok:
                latencies[index].append(elapsed)
                try:
                    statuses[index][str(json.loads(body).get("status"))] += 1
                except ValueError:
                    statuses[index]["?"] += 1
            else:
                errors[index] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    start = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        time.sleep(seconds)
    finally:
        stop.set()
    for thread in threads:
        thread.join(timeout=60)
    elapsed = time.perf_counter() - start
    flat = sorted(x for per in latencies for x in per)
    seen: Counter[str] = Counter()
    for counter in statuses:
        seen.update(counter)
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": len(flat),
        "errors": sum(errors),
        "rate": len(flat) / elapsed if elapsed else 0.0,
        "p50_ms": 1000 * percentile(flat, 50),
        "p99_ms": 1000 * percentile(flat, 99),
        "max_ms": 1000 * flat[-1] if flat else float("nan"),
        "statuses": dict(seen),
    }


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    rank = max(0, min(len(values) - 1, math.ceil(pct / 100 * len(values)) - 1))
    return values[rank]  # nearest rank


# -- throughput -----------------------------------------------------------------------------


def throughput(client: NovaClient, jobs: int) -> dict[str, Any]:
    """Upload ``jobs`` hinted photos back to back, poll them all, time until the last."""
    start = time.perf_counter()
    deadline = start + JOB_TIMEOUT + 60 * jobs
    pending: dict[int, int | None] = {}
    for number in range(jobs):
        photo = THROUGHPUT_PHOTOS[number % len(THROUGHPUT_PHOTOS)]
        subid, _ = client.upload(APOD / f"{photo}.jpg", nova_options(photo, True))
        pending[subid] = None
    statuses: dict[int, str] = {}
    job_ids: list[int] = []
    while pending and time.perf_counter() < deadline:
        for subid in list(pending):
            job_id = pending[subid]
            if job_id is None:
                job_id, failed = client.job_of(subid)
                if failed:
                    statuses[subid] = "failure"
                    del pending[subid]
                    continue
                pending[subid] = job_id
                if job_id is None:
                    continue
                job_ids.append(job_id)
            status = client.status(job_id)
            if status in ("success", "failure"):
                if status == "success":
                    client.calibration(job_id)
                statuses[subid] = status
                del pending[subid]
        if pending:
            time.sleep(POLL_INTERVAL)
    wall = time.perf_counter() - start
    if pending:
        raise TimeoutError(f"{len(pending)} throughput jobs did not finish in time")
    return {
        "jobs": jobs,
        "wall": wall,
        "per_minute": 60 * jobs / wall,
        "succeeded": sum(1 for s in statuses.values() if s == "success"),
        "job_ids": job_ids,
    }
