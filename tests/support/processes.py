"""Real processes for the tests: free ports, waiting, redis and PostgreSQL servers, workers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed; say which."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def kill_tree(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGKILL a process started with ``start_new_session`` and all its group; wait for it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=timeout)


def redis_command(binary: str, bind: str, port: int, directory: Path) -> list[str]:
    """redis-server without persistence (no RDB, no AOF): a restart empties it."""
    return [binary, "--port", str(port), "--bind", bind, "--save", "", "--appendonly", "no"] + [
        "--dir",
        str(directory),
    ]


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (scripts/install-system.sh installs it)"
    return binary


class RedisServer:
    """A redis-server on a free loopback port, without persistence."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = redis_command(redis_binary(), "127.0.0.1", self.port, self.directory)
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)

        def alive() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        # Generous: on a busy machine even redis takes a while to start listening.
        assert wait_for(alive, 60), "redis-server did not start"

    def stop(self) -> None:
        """Kill it, as a crash: nothing is saved (there is no persistence anyway)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=60)
        self.process = None


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def postgres_bindir() -> Path:
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    assert bindirs, "PostgreSQL is not installed (scripts/install-system.sh --test installs it)"
    return bindirs[-1]


def init_postgres_cluster(bindir: Path, data: Path) -> None:
    """initdb a cluster that trusts local connections, its superuser named postgres."""
    initdb = [str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"]
    subprocess.run(as_postgres([*initdb, "--encoding=UTF8"]), check=True, capture_output=True)


class PostgresServer:
    """A throw-away PostgreSQL cluster (Debian's binaries, initdb in a temporary directory),
    served on a free loopback port; it can be stopped and started again."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        # Not under pytest's 0700 temporary root: the postgres user must be able to enter it.
        self.directory = Path(tempfile.mkdtemp(prefix="nova-test-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        init_postgres_cluster(self.bindir, self.data)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str, check: bool = True) -> None:
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        subprocess.run(as_postgres(pg_ctl), check=check, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        # -w: pg_ctl waits until the server accepts connections.
        self.pg_ctl("-o", options, "-l", str(self.directory / "log"), "-w", "start")

    def stop(self) -> None:
        """ "immediate": the server goes away at once, as on a crash or a network cut."""
        self.pg_ctl("-m", "immediate", "-w", "stop")

    def createdb(self, name: str) -> None:
        createdb = [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port)]
        subprocess.run([*createdb, "-U", "postgres", name], check=True, capture_output=True)

    def remove(self) -> None:
        """Stop it if it runs and delete its files."""
        self.pg_ctl("-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def run_worker(timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a real ``nova worker --burst`` until the queues are empty."""
    result = subprocess.run(
        [sys.executable, "-m", "nova", "worker", "--burst"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def start_worker(log_path: Path, code: str | None = None) -> subprocess.Popen[bytes]:
    """Start a real ``nova worker`` (or ``python -c code``) in its own process group."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "nova", "worker"]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            env=os.environ.copy(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
