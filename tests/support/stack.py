"""A whole Nova stack started with ``nova up`` on free loopback ports (tests and bench/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.processes import free_port, wait_for


def stack_env(data_dir: Path, web_port: int, redis_port: int, **settings: str) -> dict[str, str]:
    """This process's environment without its NOVA_* variables, plus a stack's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env.update(
        NOVA_DATA_DIR=str(data_dir),
        NOVA_PORT=str(web_port),
        NOVA_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
    )
    env.update(settings)
    return env


def start_nova_up(
    env: dict[str, str], log_path: Path, cwd: Path | None = None, own_session: bool = False
) -> subprocess.Popen[bytes]:
    """``python -m nova up`` with ``env``, its output into ``log_path``.

    ``own_session`` puts it in a session of its own, out of reach of the terminal's Ctrl-C,
    for callers that stop it and everything it started themselves (bench/)."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "nova", "up"],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=own_session,
        )


def serving(base: str) -> bool:
    """Whether the web server at ``base`` answers its health check."""
    try:
        return requests.get(base + "/healthz", timeout=2).ok
    except requests.RequestException:
        return False


@dataclass
class LiveStack:
    """A whole stack started with ``nova up``: redis, gunicorn and one worker."""

    base: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def nova(self, *args: str) -> str:
        """Run another ``nova`` command against this stack; return its output."""
        done = subprocess.run(
            [sys.executable, "-m", "nova", *args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout


@contextmanager
def live_stack(tmp_path: Path, **settings: str) -> Iterator[LiveStack]:
    """Start ``nova up`` on free loopback ports with its own data directory; stop it after.

    ``settings`` are extra NOVA_* variables (e.g. NOVA_WORKERS="2")."""
    web_port = free_port()
    env = stack_env(tmp_path / "data", web_port, free_port(), **settings)
    log_path = tmp_path / "stack.log"
    process = start_nova_up(env, log_path)
    base = f"http://127.0.0.1:{web_port}"
    stack = LiveStack(base, env, process, log_path)
    try:
        # Generous: on a busy machine importing the app in every process takes a while.
        assert wait_for(lambda: serving(base), 180), log_path.read_text()[-3000:]
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
