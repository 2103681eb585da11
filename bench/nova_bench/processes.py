"""Processes the bench starts: subreaper, descendants, killing trees and groups."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections import defaultdict

from nova.engine.process import kill_process_group

# -- processes ------------------------------------------------------------------------------


def become_subreaper() -> None:
    """Orphans of our children (e.g. engine processes in their own group) become ours."""
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
    """Kill a process started in its own session or group, that group (as nova's worker does)
    and any descendant that left the group."""
    tree = [process.pid] + descendants(process.pid)
    kill_process_group(process)
    kill_pids([pid for pid in tree if _alive(pid)], grace=1.0)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
