"""Cancelling a job: its owner's request reaches the work horse solving it through redis,
and the horse kills every process it started for the job at once.

The web process ends the job's row first (``services.cancel_job``: status failure, reason
CANCEL_REASON), then sets the redis key ``cancel_key(job_id)``. A queued job's RQ entry is
cancelled too, and a worker that takes it anyway finds the row ended (``claim_job``), so it
never runs. A solving job's horse runs a ``Watcher`` that looks at the key every
WATCH_INTERVAL seconds: on a cancel it SIGKILLs every process group the job started (engine,
``solve-field``, extraction tools, sandboxed decoders; each runs in a group of its own, so
their children go too) and the warm engine's fork, and refuses to start new ones
(``check``): the solve ends within the 2 s the owner is promised, the horse lives on.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

log = logging.getLogger(__name__)
CANCEL_REASON = "cancelled by the user"
# The horse looks for a cancel this often: well inside the promised 2 s, one cheap EXISTS.
WATCH_INTERVAL = 0.25


class JobCancelled(BaseException):
    """The job was cancelled: unwind the solve (a BaseException, so that no fallback path's
    ``except Exception`` takes it for a failure and tries something else)."""


def cancel_key(job_id: int) -> str:
    return f"nova:cancel:{job_id}"


_lock = threading.Lock()
_groups: set[int] = set()  # process groups started for the current job
_pids: set[int] = set()  # forks in the horse's own group (the warm engine's)
_cancelled = threading.Event()


def track_group(pgid: int) -> None:
    """Kill this group on a cancel (at once when one came while it was starting)."""
    _track(_groups, os.killpg, pgid)


def track_pid(pid: int) -> None:
    """Kill this process on a cancel (at once when one came while it was starting)."""
    _track(_pids, os.kill, pid)


def _track(tracked: set[int], kill: Callable[[int, int], None], target: int) -> None:
    with _lock:
        tracked.add(target)
        late = _cancelled.is_set()
    if late:
        _kill(kill, target)


def _kill(kill: Callable[[int, int], None], target: int) -> bool:
    try:
        kill(target, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def forget(pid: int) -> None:
    with _lock:
        _groups.discard(pid)
        _pids.discard(pid)


def check() -> None:
    """Raise JobCancelled when the current job was cancelled (before starting a process,
    and after one ended: a killed engine is no failure to work around)."""
    if _cancelled.is_set():
        raise JobCancelled()


def kill_all() -> int:
    """SIGKILL every tracked process group and fork; how many were still there."""
    with _lock:  # flag and snapshot together: a process tracked later sees the flag
        _cancelled.set()
        targets = [(os.killpg, pgid) for pgid in _groups] + [(os.kill, pid) for pid in _pids]
    return sum(_kill(kill, target) for kill, target in targets)


class Watcher:
    """In the horse, while one job solves: poll the job's cancel key, kill on a cancel."""

    def __init__(self, connection: redis.Redis, job_id: int) -> None:
        self.connection = connection
        self.job_id = job_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="cancel-watcher")

    def _run(self) -> None:
        key = cancel_key(self.job_id)
        while not self.stop.wait(WATCH_INTERVAL):
            try:
                if not self.connection.exists(key):
                    continue
            except redis.exceptions.RedisError:
                continue  # redis away for a moment: look again
            killed = kill_all()
            log.info("job %s cancelled by its owner: %d process groups killed", self.job_id, killed)
            return


@contextmanager
def watching(connection: redis.Redis, job_id: int) -> Iterator[None]:
    """Watch for a cancel of ``job_id`` around its solve; reset for the horse's next job."""
    with _lock:
        _groups.clear()
        _pids.clear()
    _cancelled.clear()
    watcher = Watcher(connection, job_id)
    watcher.thread.start()
    try:
        yield
    finally:
        watcher.stop.set()
        watcher.thread.join(timeout=5)
        _cancelled.clear()


def request(connection: redis.Redis, job_id: int, ttl_seconds: int) -> None:
    """Tell the horse solving ``job_id`` (if any, now or soon) to stop it."""
    connection.set(cancel_key(job_id), "1", ex=ttl_seconds)
