"""Fixtures with real parts: a redis-server per session, a data directory and database per test,
and RQ workers run as real ``nova worker`` processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from flask import Flask, g
from flask.testing import FlaskClient

from nova import create_app
from nova.db.schema import drop_everything, init_database
from nova.extensions import db

# Re-exported for the test modules that still import them from here.
from tests.support.api import api_call as api_call
from tests.support.api import api_login as api_login
from tests.support.stack import LiveStack as LiveStack
from tests.support.stack import live_stack as live_stack

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NOVA_TEST_DATA", REPO.parent / "shared" / "data"))
APOD = SHARED_DATA / "apod"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Figures the tests measured (inputs tried, errors, ...), printed at the end of the run by
# pytest_terminal_summary: CI runs pytest without -s, which hides print().
FIGURES: list[tuple[str, str]] = []


def record_figure(text: str) -> None:
    """Keep one measured figure; it appears in the "figures" section of the pytest summary."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    FIGURES.append((test, text))
    print(text)  # also inline with -s


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("figures")
    for test, text in FIGURES:
        terminalreporter.write_line(f"{test}: {text}" if test else text)


def wait_for(predicate: object, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


@pytest.fixture(scope="session")
def apod() -> Path:
    """The sample photos; their absence is a failure, never a skip."""
    assert (APOD / "apod4.jpg").is_file(), f"sample data missing: {APOD} (set NOVA_TEST_DATA)"
    return APOD


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (scripts/install-system.sh installs it)"
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def alive() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    assert wait_for(alive, 10), "redis-server did not start"
    yield url
    process.terminate()
    process.wait(timeout=10)


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server (Debian's binaries) on a free port, for this session."""
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    assert bindirs, "PostgreSQL is not installed (scripts/install-system.sh --test installs it)"
    bindir = bindirs[-1]
    # Not under pytest's 0700 temporary root: the postgres user must be able to enter it.
    directory = Path(tempfile.mkdtemp(prefix="nova-test-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data = directory / "data"
    port = free_port()
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(directory / "log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "nova_test",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/nova_test"
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(directory, ignore_errors=True)


# Every test that uses the app runs on SQLite and on PostgreSQL (NOVA_TEST_DATABASES picks).
DATABASES = os.environ.get("NOVA_TEST_DATABASES", "sqlite,postgresql").split(",")


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nova.sqlite'}"
    assert request.param == "postgresql", request.param
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def nova_env(
    tmp_path: Path, redis_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Point every NOVA_* setting at this test's own data directory and database."""
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        "NOVA_ENV": "development",
        "NOVA_DATA_DIR": str(tmp_path / "data"),
        "NOVA_DATABASE_URL": database_url,
        "NOVA_REDIS_URL": redis_url,
        "NOVA_SOLVE_TIME_LIMIT": "120",
        # Tests upload and sign in faster than any person; test_limits.py tests the limits.
        "NOVA_UPLOAD_RATE_LIMIT": "100000/minute",
        "NOVA_LOGIN_RATE_LIMIT": "100000/minute",
        "NOVA_CONTENT_RATE_LIMIT": "100000/minute",
    }
    for name in list(os.environ):
        if name.startswith("NOVA_") and name not in ("NOVA_TEST_DATA",):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def app(nova_env: dict[str, str]) -> Iterator[Flask]:
    # Form posts from the test client carry no CSRF token; test_site.py checks the protection.
    app = create_app({"TESTING": True, "WTF_CSRF_ENABLED": False})

    def fresh_g() -> None:
        # The test's app context outlives each request, and with it flask.g; in production
        # every request has its own. Clear it so one client's sign-in never leaks to another,
        # first of all (nova.services.remember's hook already asks who is signed in).
        for name in list(g):
            g.pop(name)

    app.before_request_funcs.setdefault(None, []).insert(0, fresh_g)

    with app.app_context():
        drop_everything()  # a shared PostgreSQL database starts empty for every test
        init_database()
        yield app
        db.session.remove()
        drop_everything()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


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


@pytest.fixture
def worker_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start a real ``nova worker`` (fast heartbeats and reconciling) with the test's settings."""
    monkeypatch.setenv("NOVA_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("NOVA_RECONCILE_SECONDS", "1")
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "nova", "worker"],
            env=os.environ.copy(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@pytest.fixture
def make_user(app: Flask) -> Callable[[str], tuple[int, str]]:
    """Create users on demand; returns (user id, API key)."""
    from nova.services.accounts import create_user

    def make(email: str) -> tuple[int, str]:
        user, key = create_user(email)
        return user.id, key

    return make


@dataclass(frozen=True)
class SolveSamples:
    """Files for ``nova solve``: a solvable FITS image, pure noise, a truncated FITS file."""

    directory: Path
    solvable: Path  # apod4 (Ursa Major, ~34 deg wide) as a 16-bit FITS image
    noise: Path  # Gaussian noise: no star to find
    truncated: Path  # the solvable file cut in half


@pytest.fixture(scope="session")
def solve_samples(apod: Path, tmp_path_factory: pytest.TempPathFactory) -> SolveSamples:
    import numpy as np
    from astropy.io import fits
    from PIL import Image

    directory = tmp_path_factory.mktemp("solve-samples")
    directory.chmod(0o755)  # readable by the image's user (uid 10001) when mounted
    with Image.open(apod / "apod4.jpg") as photo:
        pixels = np.asarray(photo.convert("L"))[::-1].astype(np.int16)  # FITS: y points up
    samples = SolveSamples(
        directory, directory / "apod4.fits", directory / "noise.fits", directory / "cut.fits"
    )
    fits.PrimaryHDU(pixels).writeto(samples.solvable)
    noise = np.random.default_rng(14).normal(1000, 20, (400, 600)).astype(np.float32)
    fits.PrimaryHDU(noise).writeto(samples.noise)
    whole = samples.solvable.read_bytes()
    samples.truncated.write_bytes(whole[: len(whole) // 2])
    for path in (samples.solvable, samples.noise, samples.truncated):
        path.chmod(0o644)
    return samples
