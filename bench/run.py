"""Benchmark Nova end to end against bare ``solve-field`` on this machine.

Run from the repository root::

    .venv/bin/python bench/run.py            # full mode, about 12-15 minutes
    .venv/bin/python bench/run.py --quick    # smoke check, about 2-3 minutes

See bench/README.md for what is measured and how. Every process this script starts (the
``nova up`` stacks, their redis/gunicorn/workers and every engine process, bare
``solve-field`` runs) is killed on exit, on errors and on Ctrl-C: the script makes itself
a child subreaper, so even processes that left their parent's session are found again.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get("NOVA_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
APOD = SHARED_DATA / "apod"
INDEX_DIR = Path("/usr/share/astrometry")

# Known field widths (degrees) of the samples; the scale hint is +-20% around them.
WIDTHS = {"apod1": 1.5, "apod2": 4.5, "apod3": 8.4, "apod4": 33.0, "apod5": 64.0}
# Solutions from /work/shared/reference/engine-performance.md, to check every Nova answer.
KNOWN_CENTRES = {
    "apod1": (100.2157, 9.8316),
    "apod2": (84.5772, -2.7557),
    "apod3": (130.2739, -43.8743),
    "apod4": (187.1850, 56.7134),
    "apod5": (90.2589, 4.7135),
}
HINT_FRACTION = 0.2
# nova's defaults as Nova maps them onto solve-field (nova/engine/solver.py, augment_command).
NOVA_DEFAULT_ARGS = ["--objs", "1000", "--tweak-order", "2"]
BLIND_SCALE = (0.1, 180.0)
XYLS_SIZE = (719, 507)
POLL_INTERVAL = 0.2
JOB_TIMEOUT = 420.0  # Nova's own limit is 300 s per job
BARE_TIMEOUT = 300.0
SAMPLE_INTERVAL = 0.1
THROUGHPUT_PHOTOS = ("apod2", "apod3", "apod4")


# -- processes ------------------------------------------------------------------------------


def become_subreaper() -> None:
    """Orphans of our children (e.g. engine processes in their own session) become ours."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def proc_parents() -> dict[int, int]:
    """pid -> ppid for every process visible now."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields_after_name = stat[stat.rfind(b")") + 2 :].split()
        if len(fields_after_name) > 1:
            parents[int(name)] = int(fields_after_name[1])
    return parents


def descendants(root: int, parents: dict[int, int] | None = None) -> list[int]:
    parents = proc_parents() if parents is None else parents
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parents.items():
        children[ppid].append(pid)
    found: list[int] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def kill_pids(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM these pids, then SIGKILL whatever is still there after ``grace`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def kill_everything_we_started() -> None:
    """Kill every descendant of this process (they are all ours), then reap the zombies."""
    for _ in range(3):
        pids = descendants(os.getpid())
        pids = [p for p in pids if _alive(p)]
        if not pids:
            break
        kill_pids(pids, grace=3.0)
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


def kill_group(process: subprocess.Popen[bytes]) -> None:
    tree = [process.pid] + descendants(process.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    kill_pids(tree, grace=1.0)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- memory sampling ------------------------------------------------------------------------


def _read_memory(pid: int) -> tuple[int, int, int, str] | None:
    """(VmRSS kB, VmHWM kB, Pss kB, name) of a process, or None if it is gone."""
    rss = hwm = pss = 0
    name = "?"
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Name:"):
                    name = line.split(None, 1)[1].strip()
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
    except (OSError, ValueError):
        return None
    return rss, hwm, pss, name


@dataclass
class MemoryPeak:
    rss_kb: int = 0  # largest sum of VmRSS over the tree in one sample
    pss_kb: int = 0  # largest sum of Pss over the tree in one sample
    hwm_kb: int = 0  # largest VmHWM of any single process of the tree
    hwm_name: str = ""
    hwm_by_name: dict[str, int] = field(default_factory=dict)  # largest VmHWM per program
    processes: int = 0  # processes in the tree at the RSS peak
    samples: int = 0


class MemorySampler(threading.Thread):
    """Samples the process trees of named roots every SAMPLE_INTERVAL seconds.

    Peaks are kept per (root name, label); the main thread sets ``label`` to the case it
    is measuring, so every solve gets its own peak.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True, name="memory-sampler")
        self._lock = threading.Lock()
        self._roots: dict[str, int] = {}
        self._halt = threading.Event()  # not _stop: that is a Thread method (called after fork)
        self.label = "idle"
        self.peaks: dict[tuple[str, str], MemoryPeak] = {}
        # Set while the poll load runs: reading /proc ten times a second is not the service's
        # work, and it would take CPU from the server being measured.
        self.paused = threading.Event()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._roots[name] = pid

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._roots.pop(name, None)

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(SAMPLE_INTERVAL):
            if self.paused.is_set():
                continue
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a failed sample must never stop the benchmark
                continue

    def sample(self) -> None:
        with self._lock:
            roots = dict(self._roots)
        label = self.label
        if not roots:
            return
        parents = proc_parents()
        for name, root in roots.items():
            rss = pss = count = 0
            top = (0, "")
            by_name: dict[str, int] = {}
            for pid in [root, *descendants(root, parents)]:
                memory = _read_memory(pid)
                if memory is None:
                    continue
                rss += memory[0]
                pss += memory[2]
                count += 1
                by_name[memory[3]] = max(by_name.get(memory[3], 0), memory[1])
                if memory[1] > top[0]:
                    top = (memory[1], memory[3])
            if count == 0:
                continue
            with self._lock:
                peak = self.peaks.setdefault((name, label), MemoryPeak())
                peak.samples += 1
                if rss > peak.rss_kb:
                    peak.rss_kb, peak.processes = rss, count
                peak.pss_kb = max(peak.pss_kb, pss)
                if top[0] > peak.hwm_kb:
                    peak.hwm_kb, peak.hwm_name = top
                for program, hwm in by_name.items():
                    peak.hwm_by_name[program] = max(peak.hwm_by_name.get(program, 0), hwm)

    def get(self, name: str, label: str) -> MemoryPeak | None:
        with self._lock:
            return self.peaks.get((name, label))


# -- bare solve-field -----------------------------------------------------------------------


def scale_bounds(photo: str, hinted: bool) -> tuple[float, float]:
    if not hinted:
        return BLIND_SCALE
    width = WIDTHS[photo]
    return round(width * (1 - HINT_FRACTION), 6), round(width * (1 + HINT_FRACTION), 6)


def bare_command(
    source: Path, out_dir: Path, bounds: tuple[float, float], downsample: int, extra: list[str]
) -> list[str]:
    return [
        "solve-field",
        "--no-plots",
        "--overwrite",
        "--dir",
        str(out_dir),
        *NOVA_DEFAULT_ARGS,
        "--scale-units",
        "degwidth",
        "--scale-low",
        repr(bounds[0]),
        "--scale-high",
        repr(bounds[1]),
        *(["--downsample", str(downsample)] if downsample > 1 else []),
        *extra,
        str(source),
    ]


def run_bare(
    source: Path,
    bounds: tuple[float, float],
    downsample: int,
    work_root: Path,
    sampler: MemorySampler,
    label: str,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """One timed ``solve-field`` run; returns wall time and whether it solved."""
    out_dir = Path(tempfile.mkdtemp(dir=work_root, prefix="bare-"))
    cmd = bare_command(source, out_dir, bounds, downsample, extra or [])
    log_path = out_dir / "solve-field.log"
    sampler.label = label
    with log_path.open("wb") as log:
        start = time.perf_counter()
        process = subprocess.Popen(
            cmd,
            cwd=out_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        sampler.watch("bare", process.pid)
        timed_out = False
        try:
            code = process.wait(timeout=BARE_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_group(process)
            code, timed_out = None, True
        except BaseException:
            kill_group(process)
            raise
        finally:
            sampler.unwatch("bare")
        wall = time.perf_counter() - start
    solved = (out_dir / f"{source.stem}.solved").exists()
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "wall": wall,
        "solved": solved,
        "timed_out": timed_out,
        "exit": code,
        "downsample": downsample,
        "command": " ".join(cmd),
    }


# -- the Nova stack -------------------------------------------------------------------------


class Stack:
    """``python -m nova up`` on free loopback ports, with its own data directory and redis."""

    def __init__(self, root: Path, workers: int, reuse: bool = False, repo: Path = REPO) -> None:
        self.root = root
        self.repo = repo  # the checkout it runs (bench/polls.py runs an older one too)
        self.workers = workers
        self.data_dir = root / "data"
        self.log_path = root / "stack.log"
        self.web_port = free_port()
        self.redis_port = free_port()
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.api_key = ""
        self.worker_pids: list[int] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
        env.update(
            NOVA_DATA_DIR=str(self.data_dir),
            NOVA_PORT=str(self.web_port),
            NOVA_BIND="127.0.0.1",
            NOVA_REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            NOVA_WORKERS=str(workers),
            # Every timed solve must be a real one; only the re-upload stack reuses results.
            NOVA_REUSE_RESULTS="1" if reuse else "0",
            # The throughput batches upload faster than the default 60 per minute per key.
            NOVA_UPLOAD_RATE_LIMIT="100000/minute",
        )
        self.env = env

    def _nova(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nova", *args],
            env=self.env,
            cwd=self.repo,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,
        )

    def start(self) -> Stack:
        self.root.mkdir(parents=True, exist_ok=True)
        self._nova("init-db")
        created = self._nova("create-user", "bench@example.org")
        match = re.search(r"API key: ([A-Za-z0-9]+)", created.stdout)
        if not match:
            raise RuntimeError(f"create-user printed no key: {created.stdout!r}")
        self.api_key = match.group(1)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nova", "up"],
                env=self.env,
                cwd=self.repo,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nova up exited:\n{self.tail()}")
            if self._serving() and len(self._worker_processes()) >= self.workers:
                if self._registered_workers() >= self.workers:
                    self.worker_pids = self._worker_processes()
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"the stack did not come up in 90 s:\n{self.tail()}")

    def _serving(self) -> bool:
        try:
            return requests.get(self.base + "/", timeout=2).ok
        except requests.RequestException:
            return False

    def _worker_processes(self) -> list[int]:
        assert self.process is not None
        pids = []
        for pid, ppid in proc_parents().items():
            if ppid != self.process.pid:
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"nova" in cmdline and b"worker" in cmdline:
                pids.append(pid)
        return sorted(pids)

    def _registered_workers(self) -> int:
        import redis

        try:
            client = redis.Redis(port=self.redis_port, socket_connect_timeout=1)
            return int(client.scard("rq:workers"))
        except redis.exceptions.RedisError:
            return 0

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM ``nova up`` (it stops its children), then kill whatever is left."""
        if self.process is None:
            return
        tree = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        leftovers = [pid for pid in [self.process.pid, *tree] if _alive(pid)]
        leftovers += [p for p in descendants(os.getpid()) if p not in leftovers and _alive(p)]
        if self.process.poll() is None or leftovers:
            kill_pids(leftovers, grace=2.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.process = None

    def job_dir(self, job_id: int) -> Path:
        id8 = f"{job_id:08d}"
        return self.data_dir / "jobs" / id8[:4] / id8

    def server_times(self, job_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Server-side timestamps (epoch seconds) of jobs, from the database and job files."""
        database = self.data_dir / "nova.sqlite"
        if not job_ids or not database.exists():
            return {}
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
        try:
            marks = ",".join("?" * len(job_ids))
            rows = connection.execute(
                f"""SELECT j.id, j.status, j.started_at, j.finished_at, j.sources_detected,
                           s.created_at, s.processing_started, s.processing_finished
                    FROM jobs j JOIN user_images i ON i.id = j.user_image_id
                    JOIN submissions s ON s.id = i.submission_id
                    WHERE j.id IN ({marks})""",
                job_ids,
            ).fetchall()
        finally:
            connection.close()
        result: dict[int, dict[str, Any]] = {}
        for job_id, status, started, finished, sources, created, p_start, p_end in rows:
            entry: dict[str, Any] = {
                "status": status,
                "sources": sources,
                "submission_created": _epoch(created),
                "processing_started": _epoch(p_start),
                "processing_finished": _epoch(p_end),
                "job_started": _epoch(started),
                "job_finished": _epoch(finished),
            }
            directory = self.job_dir(job_id)
            for key, name in (
                ("axy_written", "job.axy"),
                ("wcs_written", "wcs.fits"),
                ("annotations_written", "annotations.json"),
            ):
                path = directory / name
                entry[key] = path.stat().st_mtime if path.exists() else None
            log = directory / "log"
            # The log is created when stage 1 starts, by its first command (birth time).
            entry["augment_started"] = _birth_time(log)
            log_text = log.read_text(errors="replace") if log.exists() else ""
            entry["retried_full_resolution"] = "extracting again at full resolution" in log_text
            annotations = directory / "annotations.json"
            try:
                stars = [a for a in json.loads(annotations.read_text()) if a.get("type") == "star"]
                entry["named_stars"] = len(stars)
            except (OSError, ValueError):
                entry["named_stars"] = None
            result[job_id] = entry
        return result


def _birth_time(path: Path) -> float | None:
    """A file's creation time (statx via GNU stat), or None where the filesystem lacks it."""
    if not path.exists():
        return None
    try:
        out = subprocess.run(
            ["stat", "-c", "%.9W", str(path)], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        value = float(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return value if value > 0 else None


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


class Clock:
    """perf_counter for durations, mapped onto the wall clock to meet server timestamps."""

    def __init__(self) -> None:
        self.perf0 = time.perf_counter()
        self.epoch0 = time.time()

    def epoch(self, perf: float) -> float:
        return self.epoch0 + (perf - self.perf0)


CLOCK = Clock()


class NovaClient:
    """nova's JSON API as a polling client does it (client.py, astroquery)."""

    def __init__(self, base: str, api_key: str) -> None:
        self.base = base
        self.http = requests.Session()
        answer = self.call("/api/login", {"apikey": api_key})
        if answer.get("status") != "success":
            raise RuntimeError(f"login failed: {answer}")
        self.session = answer["session"]

    def call(
        self, path: str, args: dict[str, Any] | None = None, files: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if args is None:
            response = self.http.get(self.base + path, timeout=60)
        else:
            response = self.http.post(
                self.base + path,
                data={"request-json": json.dumps(args)},
                files=files,
                timeout=120,
            )
        response.raise_for_status()
        return response.json()

    def upload(self, path: Path, options: dict[str, Any]) -> tuple[int, str]:
        with path.open("rb") as handle:
            answer = self.call(
                "/api/upload",
                {"session": self.session, **options},
                files={"file": (path.name, handle, "application/octet-stream")},
            )
        if answer.get("status") != "success":
            raise RuntimeError(f"upload of {path.name} refused: {answer}")
        return int(answer["subid"]), str(answer.get("hash"))

    def upload_star_list(self, xs: list[float], ys: list[float], options: dict[str, Any]) -> int:
        answer = self.call("/api/upload", {"session": self.session, "x": xs, "y": ys, **options})
        if answer.get("status") != "success":
            raise RuntimeError(f"star-list upload refused: {answer}")
        return int(answer["subid"])

    def job_of(self, subid: int) -> tuple[int | None, bool]:
        """(job id or None, whether the submission failed without a job)."""
        answer = self.call(f"/api/submissions/{subid}")
        jobs = [j for j in answer.get("jobs", []) if j is not None]
        if jobs:
            return int(jobs[0]), False
        return None, bool(answer.get("error_message"))

    def status(self, job_id: int) -> str:
        return str(self.call(f"/api/jobs/{job_id}").get("status"))

    def calibration(self, job_id: int) -> dict[str, Any]:
        return self.call(f"/api/jobs/{job_id}/calibration")

    def wait_for_job(self, subid: int, deadline: float) -> int | None:
        while time.perf_counter() < deadline:
            job_id, failed = self.job_of(subid)
            if job_id is not None or failed:
                return job_id
            time.sleep(POLL_INTERVAL)
        raise TimeoutError(f"submission {subid} got no job in time")

    def wait_until(self, job_id: int, statuses: tuple[str, ...], deadline: float) -> str:
        while time.perf_counter() < deadline:
            status = self.status(job_id)
            if status in statuses:
                return status
            time.sleep(POLL_INTERVAL)
        raise TimeoutError(f"job {job_id} did not reach {statuses} in time")

    def timed_solve(
        self,
        path: Path,
        options: dict[str, Any],
        during_solve: Callable[[int], Any] | None = None,
    ) -> dict[str, Any]:
        """Upload, poll to the end, fetch the calibration; time from upload start to it."""
        record: dict[str, Any] = {"options": options}
        start = time.perf_counter()
        deadline = start + JOB_TIMEOUT
        subid, file_hash = self.upload(path, options)
        uploaded = time.perf_counter()
        job_id = self.wait_for_job(subid, deadline)
        record.update(subid=subid, hash=file_hash, job=job_id)
        status, calibration = "failure", None
        if job_id is not None:
            if during_solve is not None:
                self.wait_until(job_id, ("solving", "success", "failure"), deadline)
                record["during_solve"] = during_solve(job_id)
            status = self.wait_until(job_id, ("success", "failure"), deadline)
        seen = time.perf_counter()
        if status == "success" and job_id is not None:
            calibration = self.calibration(job_id)
        done = time.perf_counter()
        record.update(
            status=status,
            calibration=calibration,
            wall=done - start,
            client={
                "start": CLOCK.epoch(start),
                "uploaded": CLOCK.epoch(uploaded),
                "seen": CLOCK.epoch(seen),
                "done": CLOCK.epoch(done),
            },
        )
        return record


def nova_options(photo: str, hinted: bool) -> dict[str, Any]:
    """API arguments: nothing at all for nova's defaults, or a degwidth scale hint."""
    if not hinted:
        return {}
    low, high = scale_bounds(photo, True)
    return {
        "scale_units": "degwidth",
        "scale_type": "ul",
        "scale_lower": low,
        "scale_upper": high,
    }


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


# -- the run --------------------------------------------------------------------------------


@dataclass
class Settings:
    quick: bool
    photos: list[str]
    repeats: int
    clients: int
    hammer_seconds: float
    throughput_jobs: int
    naive_downsample_attempt: bool
    warm_only: bool = False  # only bare solve-field vs the warm path (no stacks)
    # Stage 2 of the warm path by the PyPI library (NOVA_WARM_ENGINE) instead of Nova's
    # default, astrometry-engine.
    warm_engine: bool = False


@dataclass
class Results:
    settings: Settings
    machine_before: dict[str, Any] = field(default_factory=dict)
    machine_after: dict[str, Any] = field(default_factory=dict)
    bare: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    nova: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    reupload: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    # The warm path in this process: nova.engine.solver.solve with the warm engine (no stack).
    warm: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    warm_load_seconds: float | None = None
    # Stage 1 alone per photo: solve-field --just-augment vs the in-process extraction.
    stage1: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    hammer_solving: dict[str, Any] = field(default_factory=dict)
    hammer_idle: dict[str, Any] = field(default_factory=dict)
    hammered_job: dict[str, Any] = field(default_factory=dict)
    throughput: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    server: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    total_seconds: float = 0.0


def machine_info() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "model": model,
        "ram_gib": mem_kb / 1024 / 1024,
        "loadavg": os.getloadavg(),
        "kernel": platform.release(),
    }


def software_info() -> dict[str, str]:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=20, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    indexes = sorted(INDEX_DIR.glob("index-*.fits"))
    size = sum(p.stat().st_size for p in indexes)
    return {
        "astrometry.net": run(["dpkg-query", "-W", "-f", "${Version}", "astrometry.net"]),
        "python": platform.python_version(),
        "nova commit": run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "index files": f"{len(indexes)} files, {size / 1e6:.0f} MB in {INDEX_DIR}",
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def case_key(photo: str, mode: str) -> str:
    return f"{photo} {mode}"


def measure(settings: Settings, work_root: Path, sampler: MemorySampler) -> Results:
    results = Results(settings=settings)
    results.machine_before = machine_info()
    results.notes.append(
        "The machine is shared with other work; figures are noisy. Compare the load "
        "averages before and after, and prefer the ratios (bare and Nova runs are interleaved)."
    )
    started = time.perf_counter()
    engine = load_warm_engine(results) if settings.warm_engine else None
    log("warm-up: bare solve-field apod4 with a scale hint (not recorded)")
    run_bare(APOD / "apod4.jpg", scale_bounds("apod4", True), 2, work_root, sampler, "warm-up")

    stack = Stack(work_root / "stack-1worker", workers=1)
    stacks = [stack]
    try:
        log(f"starting nova up (1 worker) on {stack.base}")
        stack.start()
        for number, pid in enumerate(stack.worker_pids, start=1):
            sampler.watch(f"1w-worker{number}", pid)
        sampler.label = "idle"
        time.sleep(1.0)  # a few samples of the idle worker
        client = NovaClient(stack.base, stack.api_key)
        log("warm-up: Nova, apod4 star list as JSON x/y with a scale hint (not recorded)")
        sampler.label = "warm-up"
        warm_up(client)

        # 1. photos, blind and hinted: bare and Nova interleaved.
        for photo in settings.photos:
            image = APOD / f"{photo}.jpg"
            for mode in ("blind", "hinted"):
                key = case_key(photo, mode)
                bounds = scale_bounds(photo, mode == "hinted")
                for rep in range(settings.repeats):
                    results.bare[key].append(
                        bare_attempts(image, bounds, work_root, sampler, key, settings)
                    )
                    bare_wall = results.bare[key][-1]["wall_user"]
                    sampler.label = f"nova {key}"
                    record = client.timed_solve(image, nova_options(photo, mode == "hinted"))
                    record["photo"] = photo
                    results.nova[key].append(record)
                    sampler.label = f"warm {key}"
                    results.warm[key].append(run_warm(image, photo, bounds, work_root, engine))
                    log(
                        f"{key:14} rep {rep + 1}: bare {bare_wall:7.2f} s   "
                        f"Nova {record['wall']:7.2f} s ({record['status']})   "
                        f"warm {results.warm[key][-1]['wall']:7.2f} s "
                        f"({results.warm[key][-1]['wall'] / bare_wall:.2f}× bare)"
                    )
                    if mode == "hinted":
                        sampler.label = f"stage 1 {photo}"
                        results.stage1[photo].append(run_stage1(image, bounds, work_root))
                        log_stage1(photo, results.stage1[photo][-1])

        # The star list, with a scale hint (and blind, it is cheap).
        xyls = APOD / "apod4.xyls"
        for mode in ("hinted", "blind"):
            key = case_key("apod4.xyls", mode)
            bounds = scale_bounds("apod4", mode == "hinted")
            for rep in range(settings.repeats):
                size = ["--width", str(XYLS_SIZE[0]), "--height", str(XYLS_SIZE[1])]
                bare = run_bare(xyls, bounds, 1, work_root, sampler, f"bare {key}", size)
                bare["wall_user"] = bare["wall_direct"] = bare["wall"]
                results.bare[key].append(bare)
                sampler.label = f"nova {key}"
                record = client.timed_solve(xyls, nova_options("apod4", mode == "hinted"))
                record["photo"] = "apod4"
                results.nova[key].append(record)
                log(
                    f"{key:19} rep {rep + 1}: bare {bare['wall']:7.2f} s   "
                    f"Nova {record['wall']:7.2f} s ({record['status']})"
                )

        # 2. identical re-uploads of the hinted photos, on a stack that reuses results
        # (Nova's default): the first upload there solves, the next ones are answered from it.
        reuse_stack = Stack(work_root / "stack-reuse", workers=1, reuse=True)
        stacks.append(reuse_stack)
        log(f"starting nova up (1 worker, reusing results) on {reuse_stack.base}")
        reuse_stack.start()
        reuse_client = NovaClient(reuse_stack.base, reuse_stack.api_key)
        for photo in settings.photos:
            key = case_key(photo, "hinted")
            first = reuse_client.timed_solve(APOD / f"{photo}.jpg", nova_options(photo, True))
            log(f"first upload {key:14}: Nova {first['wall']:7.2f} s (solved)")
            for rep in range(settings.repeats):
                sampler.label = f"nova {key}"
                record = reuse_client.timed_solve(APOD / f"{photo}.jpg", nova_options(photo, True))
                record["photo"] = photo
                results.reupload[key].append(record)
                log(f"re-upload {key:14} rep {rep + 1}: Nova {record['wall']:7.2f} s")

        # 3. status polls while a blind apod5 solve runs, then on the idle server.
        log(f"hammering GET /api/jobs/J with {settings.clients} clients during a blind apod5")
        sampler.label = "nova apod5 blind (hammered)"

        def during(job_id: int) -> dict[str, Any]:
            sampler.paused.set()
            try:
                return hammer(
                    stack.web_port, f"/api/jobs/{job_id}", settings.clients, settings.hammer_seconds
                )
            finally:
                sampler.paused.clear()

        record = client.timed_solve(APOD / "apod5.jpg", {}, during_solve=during)
        record["photo"] = "apod5"
        results.hammered_job = record
        results.hammer_solving = record.get("during_solve", {})
        log(
            f"  during solve: {results.hammer_solving.get('rate', 0):.0f} req/s; "
            f"apod5 blind took {record['wall']:.2f} s ({record['status']})"
        )
        sampler.label = "idle"
        if record.get("job") is not None:
            results.hammer_idle = hammer(
                stack.web_port,
                f"/api/jobs/{record['job']}",
                settings.clients,
                settings.hammer_seconds,
            )
            log(f"  idle server: {results.hammer_idle['rate']:.0f} req/s")

        # 4a. throughput with one worker.
        for rep in range(settings.repeats):
            sampler.label = "throughput 1 worker"
            batch = throughput(client, settings.throughput_jobs)
            results.throughput[1].append(batch)
            log(f"throughput 1 worker rep {rep + 1}: {batch['per_minute']:.1f} jobs/min")
        sampler.label = "idle"
        results.server.update(stack.server_times(collect_job_ids(results)))
        for number in range(1, len(stack.worker_pids) + 1):
            sampler.unwatch(f"1w-worker{number}")
        log("stopping the 1-worker stack")
        stack.stop()

        # 4b/4c. throughput with two and four workers (and memory per worker under load);
        # four workers on this machine's two cores shows what oversubscribing costs.
        for workers in (2, 4):
            if workers > 2:
                for number in range(1, len(stack.worker_pids) + 1):
                    sampler.unwatch(f"{len(stack.worker_pids)}w-worker{number}")
                log(f"stopping the {len(stack.worker_pids)}-worker stack")
                stack.stop()
            stack = Stack(work_root / f"stack-{workers}workers", workers=workers)
            stacks.append(stack)
            log(f"starting nova up ({workers} workers) on {stack.base}")
            stack.start()
            for number, pid in enumerate(stack.worker_pids, start=1):
                sampler.watch(f"{workers}w-worker{number}", pid)
            sampler.label = "idle"
            time.sleep(1.0)
            client = NovaClient(stack.base, stack.api_key)
            sampler.label = "warm-up"
            warm_up(client)
            for rep in range(settings.repeats):
                sampler.label = f"throughput {workers} workers"
                batch = throughput(client, settings.throughput_jobs)
                results.throughput[workers].append(batch)
                rate = batch["per_minute"]
                log(f"throughput {workers} workers rep {rep + 1}: {rate:.1f} jobs/min")
            sampler.label = "idle"
            results.server.update(
                stack.server_times([j for b in results.throughput[workers] for j in b["job_ids"]])
            )
    finally:
        # Interrupted: do not wait for a running solve to finish.
        grace = 3.0 if sys.exc_info()[0] is not None else 20.0
        for each in stacks:
            each.stop(grace)
    results.machine_after = machine_info()
    results.total_seconds = time.perf_counter() - started
    return results


def warm_up(client: NovaClient) -> None:
    from astropy.io import fits

    with fits.open(APOD / "apod4.xyls") as hdus:
        xs = [float(v) for v in hdus[1].data["X"]]
        ys = [float(v) for v in hdus[1].data["Y"]]
    options = {
        **nova_options("apod4", True),
        "image_width": XYLS_SIZE[0],
        "image_height": XYLS_SIZE[1],
    }
    subid = client.upload_star_list(xs, ys, options)
    deadline = time.perf_counter() + JOB_TIMEOUT
    job_id = client.wait_for_job(subid, deadline)
    if job_id is None:
        raise RuntimeError("the warm-up star list got no job")
    status = client.wait_until(job_id, ("success", "failure"), deadline)
    if status != "success":
        raise RuntimeError(f"the warm-up star list did not solve (job {job_id})")


def load_warm_engine(results: Results) -> Any:
    """Open the index files once, as ``nova worker`` does before it forks work horses."""
    sys.path.insert(0, str(REPO))
    from nova.engine import warm_engine

    if not warm_engine.available():
        raise RuntimeError("the astrometry package is not installed (pip install -e .)")
    start = time.perf_counter()
    engine = warm_engine.preload([INDEX_DIR])
    results.warm_load_seconds = time.perf_counter() - start
    if engine is None:
        raise RuntimeError("the warm engine could not open the index files")
    return engine


def run_warm(
    image: Path, photo: str, bounds: tuple[float, float], work_root: Path, engine: Any
) -> dict[str, Any]:
    """Nova's solve in this process: the in-process extraction (stage 1) and the warm engine,
    with bare solve-field's parameters (nova's defaults: --objs 1000, tweak order 2,
    --downsample 2 then full resolution)."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS

    from nova.engine import job_files, solver

    params, prepared = warm_inputs(image, bounds)
    work_dir = Path(tempfile.mkdtemp(dir=work_root, prefix="warm-"))
    start = time.perf_counter()
    outcome = solver.solve(
        params,
        prepared,
        work_dir,
        index_dirs=[INDEX_DIR],
        time_limit=BARE_TIMEOUT,
        warm=engine,
        fast_extraction=True,
    )
    wall = time.perf_counter() - start
    job_log = (work_dir / job_files.LOG_NAME).read_text()
    record: dict[str, Any] = {
        "wall": wall,
        "solved": outcome.solved,
        "reason": outcome.reason,
        "photo": photo,
        "fallback": "astrometry-engine -c" in job_log,
        # Every attempt's stage 1 ran in-process (none fell back to solve-field).
        "in_process": "in-process extraction:" in job_log
        and "extracting with solve-field" not in job_log,
    }
    if outcome.solved:
        header = fits.getheader(work_dir / job_files.WCS_NAME)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, relax=True, naxis=2)
        ra, dec = wcs.all_pix2world([(header["IMAGEW"] + 1) / 2], [(header["IMAGEH"] + 1) / 2], 1)
        record["calibration"] = {"ra": float(ra[0]), "dec": float(dec[0])}
        record["status"] = "success"
    else:
        record["status"] = "failure"
    shutil.rmtree(work_dir, ignore_errors=True)
    return record


def warm_inputs(image: Path, bounds: tuple[float, float]) -> tuple[Any, Any]:
    """SolveParams and PreparedInput for a photo (or the apod4 star list) with this scale."""
    from PIL import Image

    from nova.engine.inputs import PreparedInput
    from nova.engine.params import parse_solve_params

    params = parse_solve_params(
        {"scale_units": "degwidth", "scale_lower": bounds[0], "scale_upper": bounds[1]}
    )
    width, height = XYLS_SIZE if image.suffix == ".xyls" else Image.open(image).size
    kind = "xylist" if image.suffix == ".xyls" else "jpeg"
    return params, PreparedInput(kind=kind, path=image, width=width, height=height)


def run_stage1(image: Path, bounds: tuple[float, float], work_root: Path) -> dict[str, Any]:
    """Stage 1 alone (nova's defaults, --downsample 2): ``solve-field --just-augment`` and
    the in-process extraction, one after the other; both as the solver runs them."""
    from astropy.io import fits

    from nova.engine import job_files, solver

    params, prepared = warm_inputs(image, bounds)
    record: dict[str, Any] = {}
    tables = []
    for name, fast in (("solve_field", False), ("in_process", True)):
        work_dir = Path(tempfile.mkdtemp(dir=work_root, prefix=f"stage1-{name}-"))
        log_path = work_dir / job_files.LOG_NAME
        start = time.perf_counter()
        code = solver.extract_sources(
            params, prepared, work_dir, log_path, time.monotonic() + BARE_TIMEOUT, fast=fast
        )
        record[name] = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"stage 1 ({name}) of {image.name} failed: {log_path.read_text()}")
        with fits.open(work_dir / job_files.AXY_NAME) as hdus:
            tables.append(bytes(hdus[1].data.tobytes()))
            record["sources"] = len(hdus[1].data)
        if fast:
            record["fell_back"] = "in-process extraction:" not in log_path.read_text()
        shutil.rmtree(work_dir, ignore_errors=True)
    record["same_sources"] = tables[0] == tables[1]
    return record


def log_stage1(photo: str, record: dict[str, Any]) -> None:
    log(
        f"{'stage 1 ' + photo:14}: solve-field --just-augment {record['solve_field']:5.2f} s   "
        f"in-process {record['in_process']:5.2f} s   {record['sources']} sources, "
        f"{'identical' if record['same_sources'] else 'DIFFERENT'}"
        f"{' (fell back)' if record['fell_back'] else ''}"
    )


def measure_warm_only(settings: Settings, work_root: Path, sampler: MemorySampler) -> Results:
    """Only section 1b: bare solve-field and the warm path, interleaved, per photo."""
    results = Results(settings=settings)
    results.machine_before = machine_info()
    started = time.perf_counter()
    engine = load_warm_engine(results) if settings.warm_engine else None
    for photo in settings.photos:
        image = APOD / f"{photo}.jpg"
        for mode in ("blind", "hinted"):
            key = case_key(photo, mode)
            bounds = scale_bounds(photo, mode == "hinted")
            for rep in range(settings.repeats):
                results.bare[key].append(
                    bare_attempts(image, bounds, work_root, sampler, key, settings)
                )
                results.warm[key].append(run_warm(image, photo, bounds, work_root, engine))
                bare_wall = results.bare[key][-1]["wall_user"]
                warm_wall = results.warm[key][-1]["wall"]
                log(
                    f"{key:14} rep {rep + 1}: bare {bare_wall:7.2f} s"
                    f"   warm {warm_wall:7.2f} s ({warm_wall / bare_wall:.2f}× bare)"
                )
                if mode == "hinted":
                    results.stage1[photo].append(run_stage1(image, bounds, work_root))
                    log_stage1(photo, results.stage1[photo][-1])
    results.machine_after = machine_info()
    results.total_seconds = time.perf_counter() - started
    return results


FAILED_DOWNSAMPLED: dict[str, dict[str, Any]] = {}


def bare_attempts(
    image: Path,
    bounds: tuple[float, float],
    work_root: Path,
    sampler: MemorySampler,
    key: str,
    settings: Settings,
) -> dict[str, Any]:
    """solve-field as a user runs it: --downsample 2 first, full resolution if that fails.

    A downsampled attempt that failed once fails every time (same input, same search), so
    later repetitions reuse its first time instead of running it again: the failed blind
    apod5 attempt alone takes minutes.
    """
    label = f"bare {key}"
    first = FAILED_DOWNSAMPLED.get(key)
    if first is None:
        if not settings.naive_downsample_attempt and key == case_key("apod5", "blind"):
            first = {"wall": float("nan"), "solved": False, "skipped": True, "downsample": 2}
        else:
            first = run_bare(image, bounds, 2, work_root, sampler, label)
        if first["solved"]:
            return {**first, "wall_user": first["wall"], "wall_direct": first["wall"]}
        FAILED_DOWNSAMPLED[key] = first
    second = run_bare(image, bounds, 1, work_root, sampler, label)
    return {
        **second,
        "first_attempt": first,
        "wall_user": first["wall"] + second["wall"],
        "wall_direct": second["wall"],
    }


def collect_job_ids(results: Results) -> list[int]:
    ids = []
    for group in (results.nova, results.reupload):
        for records in group.values():
            ids += [r["job"] for r in records if r.get("job") is not None]
    if results.hammered_job.get("job") is not None:
        ids.append(results.hammered_job["job"])
    ids += [j for batch in results.throughput[1] for j in batch["job_ids"]]
    return ids


# -- the report -----------------------------------------------------------------------------


def median(values: list[float]) -> float:
    values = [v for v in values if v is not None and v == v]
    return statistics.median(values) if values else float("nan")


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.{digits}f}"


def ratio(a: float, b: float) -> str:
    if a != a or b != b or not b:
        return "–"
    return f"{a / b:.2f}×"


BREAKDOWN = [
    ("upload", "client start", "client uploaded"),
    ("queue→sub", "client uploaded", "processing_started"),
    ("recognise", "processing_started", "processing_finished"),
    ("queue→solve", "processing_finished", "job_started"),
    ("prepare", "job_started", "augment_started"),
    ("extract", "augment_started", "axy_written"),
    ("engine", "axy_written", "wcs_written"),
    ("objects", "wcs_written", "annotations_written"),
    ("finish", None, "job_finished"),
    ("poll lag", "job_finished", "client seen"),
    ("calib GET", "client seen", "client done"),
]


def breakdown(record: dict[str, Any], server: dict[int, dict[str, Any]]) -> dict[str, float]:
    """Where one Nova solve's wall time went, in seconds per stage."""
    stamps: dict[str, float | None] = {}
    stamps.update({f"client {k}": v for k, v in record.get("client", {}).items()})
    stamps.update(server.get(record.get("job") or -1, {}))
    parts: dict[str, float] = {}
    for name, begin, end in BREAKDOWN:
        if begin is None:  # "finish" starts at the last product written
            begin_value = next(
                (
                    stamps[k]
                    for k in ("annotations_written", "wcs_written", "axy_written")
                    if stamps.get(k) is not None
                ),
                None,
            )
        else:
            begin_value = stamps.get(begin)
        end_value = stamps.get(end)
        if isinstance(begin_value, float) and isinstance(end_value, float):
            parts[name] = end_value - begin_value
    return parts


def check_solution(record: dict[str, Any]) -> str:
    calibration = record.get("calibration") or {}
    known = KNOWN_CENTRES.get(record.get("photo", ""))
    if record.get("status") != "success" or "ra" not in calibration or known is None:
        return "FAILED" if record.get("status") != "success" else "?"
    off = max(abs(calibration["ra"] - known[0]), abs(calibration["dec"] - known[1]))
    return "ok" if off < 0.5 else f"OFF by {off:.2f}°"


def render(results: Results, sampler: MemorySampler) -> str:
    s = results.settings
    before, after = results.machine_before, results.machine_after
    software = software_info()
    lines: list[str] = []
    add = lines.append
    mode = "quick (smoke check)" if s.quick else "full"
    add("# Nova benchmark: end to end vs bare solve-field")
    add("")
    add(f"Mode: **{mode}**; each timing is the median of {s.repeats} run(s). ")
    add(f"Generated by `bench/run.py` in {results.total_seconds / 60:.1f} min.")
    add("")
    add("## Machine")
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| date | {before.get('date')} → {after.get('date')} |")
    add(f"| CPU | {before.get('nproc')} × {before.get('model')} |")
    add(f"| RAM | {before.get('ram_gib', 0):.1f} GiB |")
    add(f"| kernel | {before.get('kernel')} |")
    load_b = " / ".join(f"{x:.2f}" for x in before.get("loadavg", ()))
    load_a = " / ".join(f"{x:.2f}" for x in after.get("loadavg", ()))
    add(f"| load average (1/5/15 min) before | {load_b} |")
    add(f"| load average (1/5/15 min) after | {load_a} |")
    for name, value in software.items():
        add(f"| {name} | {value} |")
    add(f"| photos | {APOD} |")
    add("")
    add(
        "The machine is shared with other work, so every figure is noisy; the load average "
        "includes this benchmark itself (one solve plus the client, about 1–2). Bare and Nova "
        "runs are interleaved so that drifting load hits both alike."
    )
    add("")

    if s.warm_only:
        render_warm(results, add)
        return "\n".join(lines)

    render_targets(results, add)

    # 1.
    add("## 1. Nova's API end to end vs bare solve-field")
    add("")
    add(
        "Same index files, same parameters: nova's defaults (`--objs 1000 --tweak-order 2 "
        "--scale-units degwidth`, 0.1–180° without a hint, `--downsample 2`), and a "
        "±20 % `degwidth` hint around the known width. *bare* is "
        "`solve-field --no-plots --overwrite --dir TMP …`. *bare as a user* runs "
        "`--downsample 2` first and, only if that does not solve, again at full resolution "
        "(apod5: the downsampled image leaves 46 sources). *bare, solving command* is only "
        "the run that solves. *Nova* is upload start → calibration JSON through the API "
        f"(login once; `/api/upload`; poll `/api/submissions/N`, then `/api/jobs/J` every "
        f"{POLL_INTERVAL} s; `/api/jobs/J/calibration`), one worker."
    )
    add("")
    add(
        "| photo | hints | bare as a user (s) | bare, solving command (s) | Nova (s) "
        "| Nova / bare-as-user | Nova / solving command | Nova answer |"
    )
    add("|---|---|---|---|---|---|---|---|")
    totals = {"user": 0.0, "direct": 0.0, "nova": 0.0}
    totals_by_mode: dict[str, dict[str, float]] = defaultdict(
        lambda: {"user": 0.0, "direct": 0.0, "nova": 0.0}
    )
    for key in results.nova:
        bare_runs = results.bare.get(key, [])
        user = median([b["wall_user"] for b in bare_runs])
        direct = median([b["wall_direct"] for b in bare_runs])
        nova = median([r["wall"] for r in results.nova[key]])
        solved_bare = all(b["solved"] for b in bare_runs)
        note = "" if solved_bare else " (not solved)"
        first = bare_runs[0].get("first_attempt") if bare_runs else None
        if first is not None:
            if first.get("skipped"):
                note += " (ds2 attempt skipped)"
            else:
                note += f" (ds2 fails in {fmt(first['wall'])} s)"
        photo, hints = key.split(" ")
        checks = ", ".join(sorted({check_solution(r) for r in results.nova[key]}))
        add(
            f"| {photo} | {hints} | {fmt(user)}{note} | {fmt(direct)} | {fmt(nova)} "
            f"| {ratio(nova, user)} | {ratio(nova, direct)} | {checks} |"
        )
        if not photo.endswith(".xyls"):
            for bucket in (totals, totals_by_mode[hints]):
                bucket["user"] += user
                bucket["direct"] += direct
                bucket["nova"] += nova
    for hints, bucket in sorted(totals_by_mode.items()):
        add(
            f"| **total photos** | {hints} | {fmt(bucket['user'])} | {fmt(bucket['direct'])} "
            f"| {fmt(bucket['nova'])} | {ratio(bucket['nova'], bucket['user'])} "
            f"| {ratio(bucket['nova'], bucket['direct'])} | |"
        )
    add(
        f"| **total photos** | all | {fmt(totals['user'])} | {fmt(totals['direct'])} "
        f"| {fmt(totals['nova'])} | {ratio(totals['nova'], totals['user'])} "
        f"| {ratio(totals['nova'], totals['direct'])} | |"
    )
    add("")
    add(
        "The star list `apod4.xyls` is uploaded as a file (Nova reads IMAGEW/IMAGEH from it); "
        f"bare runs `solve-field --width {XYLS_SIZE[0]} --height {XYLS_SIZE[1]}` on it."
    )
    add("")

    # Breakdown.
    add("### Where Nova's time goes (medians, seconds)")
    add("")
    add(
        "From the client's clock, the database timestamps (submission processing, job "
        "claimed/finished) and the modification times of the job's files (`job.axy` = "
        "extraction done, `wcs.fits` = engine done, `annotations.json` = objects in the "
        "field listed). *queue→sub* and *queue→solve* are the two RQ hops (enqueue, "
        "dequeue, fork of a work horse); *recognise* identifies the upload; "
        "*prepare* is claiming the job and recognising the stored file again; "
        "*extract* is stage 1, in-process or by `solve-field --just-augment` (both "
        "extractions when Nova retries at full resolution; from the birth time of the job's "
        "`log`); *objects* is "
        "`plot-constellations` twice plus one `query-starkd` per named star; *finish* is "
        "removing temporaries and publishing the job directory; *poll lag* is the job's "
        "`finished_at` → the client's poll seeing `success` (the final database commit plus "
        f"up to one {POLL_INTERVAL} s poll interval)."
    )
    add("")
    names = [name for name, _, _ in BREAKDOWN]
    add("| case | " + " | ".join(names) + " | sum | Nova e2e | bare (solving cmd) | notes |")
    add("|---|" + "---|" * (len(names) + 4))
    for key, records in results.nova.items():
        parts = [breakdown(r, results.server) for r in records]
        cells = [fmt(median([p.get(n, float("nan")) for p in parts])) for n in names]
        total = median([sum(p.values()) for p in parts])
        jobs = [results.server.get(r.get("job") or -1, {}) for r in records]
        notes = []
        if any(j.get("retried_full_resolution") for j in jobs):
            notes.append("retried at full resolution")
        stars = [j.get("named_stars") for j in jobs if j.get("named_stars") is not None]
        if stars:
            notes.append(f"{max(stars)} named stars")
        sources = [j.get("sources") for j in jobs if j.get("sources") is not None]
        if sources:
            notes.append(f"{sources[0]} sources")
        bare_direct = median([b["wall_direct"] for b in results.bare.get(key, [])])
        add(
            f"| {key} | "
            + " | ".join(cells)
            + f" | {fmt(total)} | {fmt(median([r['wall'] for r in records]))}"
            + f" | {fmt(bare_direct)} | {'; '.join(notes)} |"
        )
    add("")

    render_warm(results, add)

    # 2.
    add("## 2. Identical re-upload")
    add("")
    add(
        "The same photo with the same parameters uploaded again, on a stack with result reuse "
        "on (Nova's default; the timed stack of section 1 has it off so that every solve there "
        "is real): the file is stored once (same hash), every upload gets a new submission and "
        "job, and a repeat is answered from the earlier solve without running the engine."
    )
    add("")
    add(
        "| photo (hinted) | first upload with these parameters (s) | re-upload (s) "
        "| re-upload / first | same hash | new job each time |"
    )
    add("|---|---|---|---|---|---|")
    for key, records in results.reupload.items():
        firsts = results.nova.get(key, [])
        first = firsts[0]["wall"] if firsts else float("nan")
        again = median([r["wall"] for r in records])
        hashes = {r.get("hash") for r in records} | {r.get("hash") for r in firsts}
        job_ids = [r.get("job") for r in records + firsts]
        add(
            f"| {key.split(' ')[0]} | {fmt(first)} | {fmt(again)} | {ratio(again, first)} "
            f"| {'yes' if len(hashes) == 1 else 'no'} "
            f"| {'yes' if len(set(job_ids)) == len(job_ids) else 'no'} |"
        )
    add("")

    # 3.
    add("## 3. Status polling under load")
    add("")
    add(
        f"{s.clients} concurrent clients ({hammer_tool(results)}) GET `/api/jobs/J` back to "
        f"back for {s.hammer_seconds:g} s: first while a blind apod5 solve runs on the only "
        "worker, then against the idle server (same job, finished). The load tool runs on the "
        "same cores as the server and the solve."
    )
    add("")
    add("| when | requests | req/s | p50 (ms) | p99 (ms) | max (ms) | errors | statuses |")
    add("|---|---|---|---|---|---|---|---|")
    for label, data in (
        ("during the apod5 solve", results.hammer_solving),
        ("idle server", results.hammer_idle),
    ):
        if not data:
            continue
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(data["statuses"].items()))
        add(
            f"| {label} | {data['requests']} | {data['rate']:.0f} | {fmt(data['p50_ms'], 1)} "
            f"| {fmt(data['p99_ms'], 1)} | {fmt(data['max_ms'], 1)} | {data['errors']} "
            f"| {statuses} |"
        )
    add("")
    job = results.hammered_job
    if job:
        server = results.server.get(job.get("job") or -1, {})
        solve = _span(server, "job_started", "job_finished")
        plain = [
            _span(results.server.get(r.get("job") or -1, {}), "job_started", "job_finished")
            for r in results.nova.get(case_key("apod5", "blind"), [])
        ]
        line = (
            f"The hammered blind apod5 job took {fmt(job.get('wall'))} s end to end "
            f"({job.get('status')}); its worker-side solve took {fmt(solve)} s"
        )
        if plain:
            line += f", against {fmt(median(plain))} s without the polling load (section 1)."
        else:
            line += " (no unhammered apod5 run in this mode to compare with)."
        add(line)
        add("")

    # 4.
    add("## 4. Throughput: jobs per minute with 1, 2 and 4 workers")
    add("")
    add(
        f"{s.throughput_jobs} hinted uploads cycling {', '.join(THROUGHPUT_PHOTOS)}, sent "
        "back to back, then all polled every "
        f"{POLL_INTERVAL} s; wall = first upload start → last calibration JSON. A fresh "
        "`nova up` stack per worker count (`NOVA_WORKERS=1`, `2`, then `4`)."
    )
    add("")
    add("| workers | jobs | wall (s) | jobs/min | worker span (s) | solved |")
    add("|---|---|---|---|---|---|")
    rates: dict[int, float] = {}
    for workers, batches in sorted(results.throughput.items()):
        wall = median([b["wall"] for b in batches])
        rates[workers] = median([b["per_minute"] for b in batches])
        spans = []
        for batch in batches:
            entries = [results.server.get(j, {}) for j in batch["job_ids"]]
            starts = [e["job_started"] for e in entries if e.get("job_started")]
            ends = [e["job_finished"] for e in entries if e.get("job_finished")]
            if starts and ends:
                spans.append(max(ends) - min(starts))
        solved = sum(b["succeeded"] for b in batches)
        total_jobs = sum(b["jobs"] for b in batches)
        add(
            f"| {workers} | {batches[0]['jobs']} | {fmt(wall)} | {fmt(rates[workers], 1)} "
            f"| {fmt(median(spans))} | {solved}/{total_jobs} |"
        )
    if 1 in rates and 2 in rates:
        add("")
        line = f"2 workers / 1 worker: **{ratio(rates[2], rates[1])}** jobs per minute"
        if 4 in rates:
            line += f"; 4 workers / 1 worker: {ratio(rates[4], rates[1])}"
        add(f"{line} (on {before.get('nproc')} CPUs).")
    add("")

    # 5.
    add("## 5. Memory")
    add("")
    add(
        f"The process tree of each worker (the `nova worker` process, its RQ work horse "
        f"and every engine process under it) sampled every {SAMPLE_INTERVAL} s: peak sum of "
        "RSS, peak sum of PSS (shared pages split between sharers; the fork of the horse "
        "and the mmapped index files are shared), and the largest single-process VmHWM. "
        "Bare solve-field's tree is sampled the same way. Peaks are over all repetitions."
    )
    add("")
    add(
        "| process tree | case | peak RSS (MB) | peak PSS (MB) | largest VmHWM (MB) "
        "| VmHWM by program (MB) | samples |"
    )
    add("|---|---|---|---|---|---|---|")
    rows = sorted(sampler.peaks.items(), key=lambda item: (item[0][0], item[0][1]))
    for (root, label), peak in rows:
        if label == "warm-up" or (root == "bare" and not label.startswith("bare")):
            continue
        if root != "bare" and label.startswith("bare"):
            continue  # the worker idles during bare runs; "idle" covers it
        add(
            f"| {root} | {label} | {peak.rss_kb / 1024:.0f} | {peak.pss_kb / 1024:.0f} "
            f"| {peak.hwm_kb / 1024:.0f} ({peak.hwm_name}) | {programs(peak)} | {peak.samples} |"
        )
    add("")

    add("## Notes")
    add("")
    for note in results.notes:
        add(f"- {note}")
    add(
        "- Timings are wall-clock seconds on a loopback connection; `ratio` columns divide "
        "Nova's median by bare solve-field's median."
    )
    add(
        "- Warm-ups (one bare apod4 run, one Nova JSON star-list solve per stack) are not "
        "recorded; index files are in the page cache for every timed run."
    )
    add("")
    return "\n".join(lines)


def _photo_ratios(measured: dict[str, list[dict[str, Any]]], results: Results) -> list[tuple]:
    """(case, ours, bare as a user, bare solving command) per photo case, medians."""
    rows = []
    for key, records in measured.items():
        bare = results.bare.get(key, [])
        if not bare or not records or key.split(" ")[0].endswith(".xyls"):
            continue
        rows.append(
            (
                key,
                median([r["wall"] for r in records]),
                median([b["wall_user"] for b in bare]),
                median([b["wall_direct"] for b in bare]),
            )
        )
    return rows


def render_targets(results: Results, add: Callable[[str], None]) -> None:
    """Issue #8's targets, each with what this run measured and whether it is met."""
    add("## Targets (issue #8)")
    add("")
    add("| target | measured in this run | met? |")
    add("|---|---|---|")

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("**yes**" if ok else "**no**")

    def within(rows: list[tuple], column: int, limit: float) -> tuple[str, bool | None]:
        if not rows:
            return "not measured", None
        worst = max(rows, key=lambda row: row[1] / row[column])
        total = sum(row[1] for row in rows) / sum(row[column] for row in rows)
        text = f"total {total:.2f}×, worst {worst[0]} {worst[1] / worst[column]:.2f}×"
        return text, total <= limit and worst[1] / worst[column] <= limit

    cold = _photo_ratios(results.nova, results)
    text, ok = within(cold, 3, 1.05)
    add(
        f"| API end to end ≤ 1.05× bare solving command, per photo and in total | {text} "
        f"| {verdict(ok)} |"
    )
    text, ok = within(cold, 2, 1.05)
    add(f"| (the same against bare solve-field as a user runs it) | {text} | {verdict(ok)} |")
    warm = _photo_ratios(results.warm, results)
    for column, against in ((3, "bare solving command"), (2, "bare solve-field as a user")):
        if warm:
            total = sum(row[1] for row in warm) / sum(row[column] for row in warm)
            add(
                f"| warm path ≥ 3× faster than {against} over the photos in total "
                f"| {1 / total:.2f}× faster | {verdict(1 / total >= 3)} |"
            )
    walls = [r["wall"] for records in results.reupload.values() for r in records]
    if walls:
        add(
            f"| identical re-upload answered in < 0.2 s | slowest {max(walls):.3f} s "
            f"| {verdict(max(walls) < 0.2)} |"
        )
    polls = results.hammer_solving
    if polls:
        ok = polls["rate"] >= 1000 and polls["p99_ms"] < 50 and polls["errors"] == 0
        add(
            f"| ≥ 1,000 status polls/s, p99 < 50 ms, while solving | {polls['rate']:.0f}/s, "
            f"p99 {polls['p99_ms']:.1f} ms, {polls['errors']} errors | {verdict(ok)} |"
        )
    rates = {w: median([b["per_minute"] for b in bs]) for w, bs in results.throughput.items()}
    if 1 in rates and 2 in rates:
        gain = rates[2] / rates[1]
        add(
            f"| 2 workers ≥ 1.8× the jobs/min of 1 | {gain:.2f}× ({rates[1]:.0f} → "
            f"{rates[2]:.0f} jobs/min) | {verdict(gain >= 1.8)} |"
        )
    add("")


def hammer_tool(results: Results) -> str:
    if results.hammer_solving.get("tool") == "wrk":
        return "wrk, keep-alive connections"
    return "Python threads, a new loopback connection per request"


def render_warm(results: Results, add: Callable[[str], None]) -> None:
    """Section 1b: the warm path (in-process extraction + the warm engine) vs bare
    solve-field; section 1c: stage 1 alone, in-process vs ``solve-field --just-augment``."""
    if not results.warm:
        return
    add("## 1b. The warm path in-process vs bare solve-field")
    add("")
    add(
        "*warm* is `nova.engine.solver.solve` in the benchmark's own process: stage 1 by the "
        "in-process extraction (`nova/engine/extraction.py`: the same `job.axy` as `solve-field "
        "--just-augment` without its Python helpers), stage 2 by "
        + (
            "the warm engine (PyPI `astrometry`, index files opened once, in "
            f"{fmt(results.warm_load_seconds, 3)} s)"
            if results.settings.warm_engine
            else "`astrometry-engine`, as Nova's workers run it by default"
        )
        + ", with bare solve-field's "
        "parameters (nova's defaults, ±20 % hint), full resolution again when `--downsample 2` "
        "leaves too few stars or no solution. No queue, no web server. The ratios are "
        "warm ÷ bare (below 1: the warm path is faster)."
    )
    add("")
    add(
        "| photo | hints | bare as a user (s) | bare, solving command (s) | warm (s) "
        "| warm / bare as a user | warm / solving command | warm answer |"
    )
    add("|---|---|---|---|---|---|---|---|")
    totals: dict[str, list[float]] = {"user": [], "direct": [], "warm": []}
    for key, records in results.warm.items():
        bare = results.bare.get(key, [])
        if not bare or not records:
            continue
        user = median([r["wall_user"] for r in bare])
        direct = median([r["wall_direct"] for r in bare])
        warm = median([r["wall"] for r in records])
        totals["user"].append(user)
        totals["direct"].append(direct)
        totals["warm"].append(warm)
        photo, hints = key.rsplit(" ", 1) if " " in key else (key, "")
        answer = check_solution(records[-1])
        if any(r.get("fallback") for r in records):
            answer += " (astrometry-engine fallback)"
        if not all(r.get("in_process", True) for r in records):
            answer += " (stage 1 by solve-field)"
        add(
            f"| {photo} | {hints} | {fmt(user)} | {fmt(direct)} | {fmt(warm)} "
            f"| {ratio(warm, user)} | {ratio(warm, direct)} | {answer} |"
        )
    if totals["warm"]:
        user, direct, warm = (sum(totals[k]) for k in ("user", "direct", "warm"))
        add(
            f"| **total** | all | {fmt(user)} | {fmt(direct)} | {fmt(warm)} "
            f"| **{ratio(warm, user)}** | **{ratio(warm, direct)}** | |"
        )
    add("")
    render_stage1(results, add)


def render_stage1(results: Results, add: Callable[[str], None]) -> None:
    if not results.stage1:
        return
    add("## 1c. Stage 1 alone: in-process extraction vs `solve-field --just-augment`")
    add("")
    add(
        "Both as `nova.engine.solver.extract_sources` runs them (`fast=False`, then `fast=True`), "
        "on "
        "each photo with its scale hint and nova's defaults (`--downsample 2`, `--objs 1000`), "
        "in the benchmark's process, one after the other. *identical* compares the source "
        "tables of the two `job.axy` byte for byte."
    )
    add("")
    add("| photo | solve-field --just-augment (s) | in-process (s) | ratio | sources | identical |")
    add("|---|---|---|---|---|---|")
    theirs_total = ours_total = 0.0
    for photo, records in results.stage1.items():
        theirs = median([r["solve_field"] for r in records])
        ours = median([r["in_process"] for r in records])
        theirs_total += theirs
        ours_total += ours
        same = "yes" if all(r["same_sources"] for r in records) else "**no**"
        if any(r["fell_back"] for r in records):
            same += " (fell back to solve-field)"
        add(
            f"| {photo} | {fmt(theirs, 3)} | {fmt(ours, 3)} | {ratio(ours, theirs)} "
            f"| {records[-1]['sources']} | {same} |"
        )
    add(
        f"| **total** | {fmt(theirs_total, 3)} | {fmt(ours_total, 3)} "
        f"| **{ratio(ours_total, theirs_total)}** | | |"
    )
    add("")


def programs(peak: MemoryPeak, top: int = 4) -> str:
    ranked = sorted(peak.hwm_by_name.items(), key=lambda item: -item[1])[:top]
    return ", ".join(f"{name} {kb / 1024:.0f}" for name, kb in ranked)


def _span(entry: dict[str, Any], begin: str, end: str) -> float:
    a, b = entry.get(begin), entry.get(end)
    return b - a if isinstance(a, float) and isinstance(b, float) else float("nan")


def raw_json(results: Results, sampler: MemorySampler) -> dict[str, Any]:
    return {
        "settings": results.settings.__dict__,
        "machine_before": results.machine_before,
        "machine_after": results.machine_after,
        "bare": results.bare,
        "nova": results.nova,
        "reupload": results.reupload,
        "warm": results.warm,
        "warm_load_seconds": results.warm_load_seconds,
        "stage1": results.stage1,
        "hammer_solving": results.hammer_solving,
        "hammer_idle": results.hammer_idle,
        "hammered_job": {k: v for k, v in results.hammered_job.items() if k != "during_solve"},
        "throughput": results.throughput,
        "server": results.server,
        "memory": {f"{r} | {lab}": peak.__dict__ for (r, lab), peak in sampler.peaks.items()},
        "total_seconds": results.total_seconds,
    }


# -- main -----------------------------------------------------------------------------------


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so the clean-up below runs for both.

    SIGINT gets Python's handler even when it was inherited as ignored (a shell's
    background job), so ``kill -INT`` always works.
    """

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    yield


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="apod2 and apod4, 1 run each")
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown report (default bench/RESULTS.md, or bench/RESULTS-quick.md with "
        "--quick); the raw figures go next to it as .json",
    )
    parser.add_argument("--clients", type=int, default=8, help="status-poll clients (8)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--warm-only",
        action="store_true",
        help="only bare solve-field vs the warm engine in-process (section 1b), no stacks",
    )
    parser.add_argument(
        "--warm-engine",
        action="store_true",
        help="warm path stage 2 by the PyPI library (NOVA_WARM_ENGINE), not astrometry-engine",
    )
    parser.add_argument(
        "--photos", help="comma-separated photos to time, e.g. apod2,apod4 (default: all)"
    )
    parser.add_argument(
        "--skip-naive-apod5",
        action="store_true",
        help="do not time the failing --downsample 2 blind apod5 run (about 2.5 min)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (APOD / "apod4.jpg").is_file():
        print(f"sample photos missing: {APOD} (set NOVA_TEST_DATA)", file=sys.stderr)
        return 2
    for tool in ("solve-field", "astrometry-engine", "redis-server"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (scripts/install-system.sh)", file=sys.stderr)
            return 2
    settings = Settings(
        quick=args.quick,
        photos=["apod2", "apod4"] if args.quick else [f"apod{i}" for i in range(1, 6)],
        repeats=1 if args.quick else 3,
        clients=args.clients,
        hammer_seconds=5.0 if args.quick else 10.0,
        # Jobs take ~0.5 s now: 30 per batch keeps the first and last second from dominating.
        throughput_jobs=6 if args.quick else 30,
        naive_downsample_attempt=not args.skip_naive_apod5,
        warm_only=args.warm_only,
        warm_engine=args.warm_engine,
    )
    if args.photos:
        settings.photos = args.photos.split(",")
    out = args.out or (REPO / "bench" / ("RESULTS-quick.md" if args.quick else "RESULTS.md"))
    become_subreaper()
    work_root = Path(tempfile.mkdtemp(prefix="nova-bench-"))
    sampler = MemorySampler()
    sampler.start()
    log(f"Nova benchmark ({'quick' if args.quick else 'full'}); scratch in {work_root}")
    try:
        with interruptible():
            measure_run = measure_warm_only if settings.warm_only else measure
            results = measure_run(settings, work_root, sampler)
    except KeyboardInterrupt:
        log("interrupted; stopping everything that was started")
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not stop the clean-up half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sampler.stop()
        kill_everything_we_started()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if args.keep:
            log(f"kept {work_root}")
        else:
            shutil.rmtree(work_root, ignore_errors=True)
    report = render(results, sampler)
    print()
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    out.with_suffix(".json").write_text(
        json.dumps(raw_json(results, sampler), indent=1, default=str) + "\n"
    )
    log(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
