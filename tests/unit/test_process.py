"""Where engine processes run (nova.engine.process): a process group of their own, to be
killed whole, inside the worker's session, so the worker's niceness ranks them against the web
server (Linux shares the CPU between sessions first: autogroup)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nova.engine import process


def autogroup_nice(pid: int) -> int | None:
    """The niceness of pid's autogroup ("/autogroup-42 nice 5"), or None for the kernel's
    default group: a process whose session descends from boot without a setsid (PID 1 of
    some CI runners and containers) reads an empty file there."""
    fields = Path(f"/proc/{pid}/autogroup").read_text().split()
    return int(fields[-1]) if fields else None


def test_an_engine_process_is_its_own_group_in_the_workers_session(tmp_path: Path) -> None:
    with (tmp_path / "log").open("wb") as log:
        child = process.spawn(["sleep", "600"], tmp_path, log)
    try:
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
        assert os.getsid(child.pid) == os.getsid(0)
    finally:
        process.kill_process_group(child)
    assert child.wait(timeout=60) in (-15, -9)  # SIGTERM first, SIGKILL if that is ignored
    assert (tmp_path / "log").read_text().startswith("$ sleep 600\n")


def priority_after(niceness: int, new_session: bool) -> tuple[int, int | None, int | None]:
    """(its niceness, its autogroup's, the autogroup's of the process it then starts) for a
    fresh interpreter that calls lower_priority(niceness) and starts a child."""
    script = (
        "import subprocess, sys, time\n"
        "from nova.engine import process\n"
        f"process.lower_priority({niceness})\n"
        "subprocess.Popen(['sleep', '600'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        start_new_session=new_session,
    )
    grandchild = 0
    try:
        assert worker.stdout is not None and worker.stdout.readline() == b"ready\n"
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        (grandchild,) = map(int, children)
        return (
            os.getpriority(os.PRIO_PROCESS, worker.pid),
            autogroup_nice(worker.pid),
            autogroup_nice(grandchild),
        )
    finally:
        for pid in (grandchild, worker.pid):
            if pid:
                os.kill(pid, 9)
        worker.wait(timeout=60)


def test_a_worker_in_a_session_of_its_own_lowers_the_session_too() -> None:
    # A session leader (as the only process of a container is, or nova worker under setsid):
    # os.nice alone would leave its autogroup level with the web server's.
    niced = min(os.getpriority(os.PRIO_PROCESS, 0) + 7, 19)
    assert priority_after(7, new_session=True) == (niced, 7, 7)


def test_a_worker_in_a_shared_session_leaves_the_session_alone() -> None:
    # Under nova up (or a shell) the session holds the web server too: niceness ranks the
    # worker within it; the session's own rank is not the worker's to lower.
    ours = autogroup_nice(os.getpid())
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert priority_after(7, new_session=False) == (min(own + 7, 19), ours, ours)
    assert priority_after(0, new_session=False) == (own, ours, ours)
    assert autogroup_nice(os.getpid()) == ours
