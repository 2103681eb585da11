"""Run one decoding step of untrusted data in a child process under hard limits.

Decoders (astropy, Pillow, gzip/bzip2, the star-list parser) can be made to use gigabytes
or minutes by a few kilobytes of hostile input. ``run_limited`` forks, caps the child's
address space (RLIMIT_AS: what it may allocate on top of what it inherited) and CPU time
(RLIMIT_CPU), and kills it at a wall-clock deadline; the caller gets the function's result,
its ``UnsupportedInput``-style exception, or a ``DecodeLimitExceeded`` saying which limit
stopped it. Only small results come back (a pickle through a pipe): the child writes big
things (unpacked images, pictures) to files itself.

Used by the worker for every upload it recognises and every image it prepares for the
engine, and by the web process for the pictures it draws of uploads, so that no request
decodes untrusted content in the web server's own memory.
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from nova.engine import process

T = TypeVar("T")
MB = 1 << 20
# Pickled results larger than this are a bug of the caller, never a real answer.
MAX_RESULT_BYTES = 4 * MB
_PAGE = os.sysconf("SC_PAGE_SIZE")


class DecodeLimitExceeded(ValueError):
    """The child ran out of its memory, CPU or wall-clock allowance; the message says which.

    A ValueError, like the refusals of the decoders: the input is what is at fault.
    """


class DecodeCrashed(RuntimeError):
    """The child died without an answer (a signal other than the limits', or a bug)."""


@dataclass(frozen=True)
class DecodeLimits:
    memory_bytes: int  # NOVA_DECODE_MEMORY_MB: allocations on top of the parent's size
    cpu_seconds: int  # NOVA_DECODE_CPU_SECONDS
    wall_seconds: float  # what is left of the job's (or the request's) time

    def describe_memory(self) -> str:
        return f"{self.memory_bytes // MB} MB"


def _address_space_now() -> int:
    """This process's virtual size in bytes (what RLIMIT_AS counts)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * _PAGE


def _child(
    func: Callable[..., T], args: tuple[object, ...], limits: DecodeLimits, writer: int
) -> None:
    """In the forked child: set the limits, run, send (tag, value) back, and _exit."""
    status = 0
    try:
        os.setpgid(0, 0)  # own process group: the parent kills it with anything it started
        soft = _address_space_now() + limits.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu = int(used.ru_utime + used.ru_stime) + max(1, limits.cpu_seconds)
        # SIGXCPU at the soft limit (default action: die), SIGKILL one second later.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        try:
            outcome: tuple[str, object] = ("ok", func(*args))
        except MemoryError:
            outcome = ("memory", None)
        except Exception as exc:  # sent back and raised in the parent
            outcome = ("raise", exc)
        try:
            payload = pickle.dumps(outcome)
        except Exception as exc:  # an exception that cannot be pickled: keep its text
            payload = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
        if len(payload) > MAX_RESULT_BYTES:
            payload = pickle.dumps(("error", "the decoder's answer was too large"))
        view = memoryview(payload)
        while view:
            view = view[os.write(writer, view) :]
    except MemoryError:
        status = 3
    except BaseException:
        status = 4
    finally:
        os._exit(status)


def run_limited(func: Callable[..., T], *args: object, limits: DecodeLimits) -> T:
    """``func(*args)`` in a forked child under ``limits``; its result or its exception.

    Raises DecodeLimitExceeded when a limit stopped the child, DecodeCrashed when it died
    otherwise. The child never outlives this call.
    """
    if limits.wall_seconds <= 0:
        raise DecodeLimitExceeded("No time was left to read the file within the time limit.")
    process.tracker.check()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child process
        os.close(reader)
        _child(func, args, limits, writer)
    os.close(writer)
    # The child makes its own group (os.setpgid in _child); a cancel may come first.
    process.tracker.track_pid(pid)
    deadline = time.monotonic() + limits.wall_seconds
    chunks: list[bytes] = []
    timed_out = False
    try:
        timed_out = _read_until(reader, deadline, chunks)
    finally:
        os.close(reader)
        if timed_out:
            _kill(pid)
        _, status = _wait(pid, deadline)
        process.tracker.forget(pid)
    process.tracker.check()
    if timed_out:
        raise DecodeLimitExceeded(
            f"Reading the file took longer than the {limits.wall_seconds:.0f} s it had."
        )
    return _child_outcome(status, chunks, limits)  # type: ignore[no-any-return]


def _read_until(reader: int, deadline: float, chunks: list[bytes]) -> bool:
    """Collect what the child writes until it closes its end; True when the deadline came
    first. ``chunks`` is filled in place so that what was read survives an exception."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        ready, _, _ = select.select([reader], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(reader, 1 << 16)
        if not chunk:
            return False  # the child closed its end: it is exiting
        chunks.append(chunk)


def _child_outcome(status: int, chunks: list[bytes], limits: DecodeLimits) -> Any:
    """The child's result from its exit status and what it wrote; raises what it raised,
    or why it stopped."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number in (signal.SIGXCPU, signal.SIGKILL):
            raise DecodeLimitExceeded(
                f"Reading the file needed more than {limits.cpu_seconds} s of processor time."
            )
        raise DecodeCrashed(f"the decoder died with signal {number}")
    if not chunks:
        if os.WEXITSTATUS(status) == 3:
            raise _memory_exceeded(limits)
        raise DecodeCrashed(f"the decoder exited with status {os.WEXITSTATUS(status)}")
    tag, value = pickle.loads(b"".join(chunks))
    if tag == "ok":
        return value
    if tag == "memory":
        raise _memory_exceeded(limits)
    if tag == "raise":
        assert isinstance(value, BaseException)
        raise value
    raise DecodeCrashed(str(value))


def _memory_exceeded(limits: DecodeLimits) -> DecodeLimitExceeded:
    return DecodeLimitExceeded(
        f"Reading the file needed more than {limits.describe_memory()} of memory "
        "(NOVA_DECODE_MEMORY_MB)."
    )


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait(pid: int, deadline: float) -> tuple[int, int]:
    """Reap the child; kill it if it lingers (it has answered, or it has been killed)."""
    grace = max(deadline, time.monotonic()) + 2.0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return done, status
        if time.monotonic() > grace:
            _kill(pid)
            return os.waitpid(pid, 0)
        time.sleep(0.01)


def limits_for(memory_mb: int, cpu_seconds: int, wall_seconds: float) -> DecodeLimits:
    """Limits of ``memory_mb`` MB and ``cpu_seconds`` processor seconds (NOVA_DECODE_*), with
    this much wall-clock time."""
    return DecodeLimits(
        memory_bytes=memory_mb * MB, cpu_seconds=cpu_seconds, wall_seconds=wall_seconds
    )
