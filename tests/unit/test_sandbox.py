"""The decoding sandbox: limits on memory, processor and wall-clock time hold, and answers
(results and refusals) come back from the child."""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nova.engine.input_formats import UnsupportedInput
from nova.engine.sandbox import DecodeLimitExceeded, DecodeLimits, run_limited

MB = 1 << 20
GENEROUS = DecodeLimits(memory_bytes=512 * MB, cpu_seconds=30, wall_seconds=30)


def allocate(megabytes: int) -> int:
    block = bytearray(megabytes * MB)
    return len(block)


def spin() -> None:
    while True:
        pass


def sleep_forever() -> None:
    time.sleep(3600)


def refuse() -> None:
    raise UnsupportedInput("not a star list")


def own_pid() -> int:
    return os.getpid()


def test_results_and_refusals_come_back_from_the_child() -> None:
    assert run_limited(allocate, 16, limits=GENEROUS) == 16 * MB
    assert run_limited(own_pid, limits=GENEROUS) != os.getpid()
    with pytest.raises(UnsupportedInput, match="not a star list"):
        run_limited(refuse, limits=GENEROUS)


def test_memory_beyond_the_allowance_stops_the_child_not_the_caller() -> None:
    limits = DecodeLimits(memory_bytes=256 * MB, cpu_seconds=30, wall_seconds=30)
    with pytest.raises(DecodeLimitExceeded, match="more than 256 MB of memory"):
        run_limited(allocate, 2048, limits=limits)
    assert run_limited(allocate, 64, limits=limits) == 64 * MB


def test_processor_time_is_limited() -> None:
    limits = DecodeLimits(memory_bytes=256 * MB, cpu_seconds=1, wall_seconds=60)
    started = time.monotonic()
    with pytest.raises(DecodeLimitExceeded, match="processor time"):
        run_limited(spin, limits=limits)
    assert time.monotonic() - started < 30  # a busy machine may give it its second slowly


def child_pids() -> set[int]:
    """This process's children, zombies included: the test session's own servers (redis,
    PostgreSQL) are among them when earlier tests started them."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


def test_wall_clock_time_is_limited_and_the_child_is_killed() -> None:
    limits = DecodeLimits(memory_bytes=256 * MB, cpu_seconds=30, wall_seconds=1)
    before = child_pids()
    started = time.monotonic()
    with pytest.raises(DecodeLimitExceeded, match="longer than the 1 s"):
        run_limited(sleep_forever, limits=limits)
    assert time.monotonic() - started < 600  # the child sleeps 3600 s: it was stopped
    assert child_pids() == before  # no child is left behind, not even a zombie


def echo_after_a_while(number: int) -> int:
    time.sleep(0.05)
    done = subprocess.run(["echo", str(number)], capture_output=True, text=True, timeout=30)
    return int(done.stdout)


def test_concurrent_calls_from_threads_each_get_their_own_answer() -> None:
    """The web server's threads fork at once (pictures drawn for several requests): every
    child answers its own caller, through its own pipe, even with subprocesses inside."""
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda n: run_limited(echo_after_a_while, n, limits=GENEROUS), range(40))
        )
    assert answers == list(range(40))
