"""The Nova stack under test (``nova up``) and the server-side times of its jobs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nova_bench.common import REPO
from nova_bench.processes import _alive, descendants, kill_pids, proc_parents
from tests.support.processes import free_port
from tests.support.stack import serving, stack_env, start_nova_up


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
        self.env = stack_env(
            self.data_dir,
            self.web_port,
            self.redis_port,
            NOVA_BIND="127.0.0.1",
            NOVA_WORKERS=str(workers),
            # Every timed solve must be a real one; only the re-upload stack reuses results.
            NOVA_REUSE_RESULTS="1" if reuse else "0",
            # The throughput batches upload faster than the default 60 per minute per key.
            NOVA_UPLOAD_RATE_LIMIT="100000/minute",
        )

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
        self.process = start_nova_up(self.env, self.log_path, cwd=self.repo, own_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nova up exited:\n{self.tail()}")
            if serving(self.base) and len(self._worker_processes()) >= self.workers:
                if self._registered_workers() >= self.workers:
                    self.worker_pids = self._worker_processes()
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"the stack did not come up in 90 s:\n{self.tail()}")

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
