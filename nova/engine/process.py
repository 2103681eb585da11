"""The engine's subprocesses: each in a process group of its own, killed whole at a deadline,
and dying with the worker; and the hook through which a cancel reaches them.

The engine knows nothing of how a cancel arrives (the worker's redis watcher,
``nova.infra.cancellation``): whoever can cancel installs a ``ProcessTracker`` around the
solve (``tracked_by``), and every process group or fork the engine starts is registered
with it, so that a cancel kills them all at once.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

KILL_GRACE_SECONDS = 2.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Resolved once here: the forked child must do as little as possible before exec.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
# util-linux's setpriv sets the same death signal and then execs the command. A preexec_fn
# makes Python fork the whole worker and run Python in the child, about 10 ms per command
# (stage 1 runs four); without one, subprocess spawns with vfork in about 1 ms.
SETPRIV = shutil.which("setpriv")


class SolveTimeout(Exception):
    pass


class ProcessTracker(Protocol):
    """What can cancel a solve: told of every process the engine starts and ends."""

    def check(self) -> None:
        """Raise (a BaseException) when the solve was cancelled."""

    def track_group(self, pgid: int) -> None:
        """Kill this process group on a cancel."""

    def track_pid(self, pid: int) -> None:
        """Kill this process (a fork in the worker's own group) on a cancel."""

    def forget(self, pid: int) -> None:
        """The process has ended: nothing to kill any more."""


class _Untracked:
    """No one can cancel: a solve outside the worker (the CLI, the benchmark, tests)."""

    def check(self) -> None:
        pass

    def track_group(self, pgid: int) -> None:
        pass

    def track_pid(self, pid: int) -> None:
        pass

    def forget(self, pid: int) -> None:
        pass


tracker: ProcessTracker = _Untracked()


@contextmanager
def tracked_by(cancels: ProcessTracker) -> Iterator[None]:
    """Register every process the engine starts with ``cancels`` while inside."""
    global tracker
    earlier, tracker = tracker, cancels
    try:
        yield
    finally:
        tracker = earlier


def run_with_deadline(cmd: list[str], cwd: Path, log_path: Path, deadline: float) -> int:
    """Run ``cmd`` appending to ``log_path``; kill its whole process group at ``deadline``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise SolveTimeout()
    tracker.check()
    with log_path.open("ab") as log:
        process = spawn(cmd, cwd, log)
        # Its own process group, so its pid is its group: a cancel kills the group at once.
        tracker.track_group(process.pid)
        try:
            code = process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            kill_process_group(process)
            raise SolveTimeout() from None
        except BaseException:
            # The worker itself is being stopped (RQ timeout, SIGTERM): take the engine along.
            kill_process_group(process)
            raise
        finally:
            tracker.forget(process.pid)
    tracker.check()  # killed by a cancel: no failure to work around
    return code


def spawn(cmd: list[str], cwd: Path, log: BinaryIO) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, output to ``log`` (the command line first),
    with SIGKILL as its death signal should the worker die."""
    log.write(("$ " + " ".join(cmd) + "\n").encode())
    log.flush()
    if SETPRIV and shutil.which(cmd[0]):
        argv, preexec = [SETPRIV, "--pdeathsig", "KILL", "--", *cmd], None
    else:  # a missing program still raises FileNotFoundError here, as it always did
        argv, preexec = cmd, die_with_parent
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # A process group of its own, to kill all it starts; not a session of its own: Linux
        # schedules each session as one group (autogroup), so a session leader would get as
        # much CPU as the web server's whole session whatever the worker's niceness.
        process_group=0,
        preexec_fn=preexec,
    )


def die_with_parent() -> None:
    """In the child, before exec: get SIGKILL if the worker dies (kill -9 leaves no one to
    stop the engine otherwise; in its own process group it would live on)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after a short grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # The leader is gone; children it spawned may still hold the group.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        break


def lower_priority(niceness: int) -> None:
    """Make this process, and all it starts from now on, yield the CPU to others.

    os.nice ranks it among the processes of its own session only: Linux schedules each
    session as one group (autogroup) with a fair share of the CPU. Under ``nova up`` the worker
    shares the web server's session, and that is enough. In a container of its own (its session
    led by PID 1, the container's init) or as a session leader, the session is the worker's
    alone and would get as much CPU as the web server's at any niceness: there the session's
    own niceness (/proc/self/autogroup) is lowered too.
    """
    niceness = min(max(niceness, 0), 19)
    if niceness == 0:
        return
    os.nice(niceness)
    if os.getsid(0) not in (1, os.getpid()):
        return  # a session shared with others (a shell's, nova up's): theirs to rank
    try:
        Path("/proc/self/autogroup").write_text(f"{niceness}\n")
    except OSError:
        pass  # no autogroup (a kernel without it, a read-only /proc): os.nice is all there is
