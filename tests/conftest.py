"""Fixtures with real parts: a redis-server per session, a data directory and database per test,
and RQ workers run as real ``nova worker`` processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from nova import create_app
from nova.database import init_database
from nova.extensions import db

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NOVA_TEST_DATA", REPO.parent / "shared" / "data"))
APOD = SHARED_DATA / "apod"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@pytest.fixture
def nova_env(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point every NOVA_* setting at this test's own data directory and database."""
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        "NOVA_ENV": "development",
        "NOVA_DATA_DIR": str(tmp_path / "data"),
        "NOVA_REDIS_URL": redis_url,
        "NOVA_SOLVE_TIME_LIMIT": "120",
    }
    for name in list(os.environ):
        if name.startswith("NOVA_") and name not in ("NOVA_TEST_DATA",):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def app(nova_env: dict[str, str]) -> Iterator[Flask]:
    app = create_app({"TESTING": True})
    with app.app_context():
        init_database()
        yield app
        db.session.remove()
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
def make_user(app: Flask) -> Callable[[str], tuple[int, str]]:
    """Create users on demand; returns (user id, API key)."""
    from nova.accounts import create_user

    def make(email: str) -> tuple[int, str]:
        user, key = create_user(email)
        return user.id, key

    return make


def api_call(
    client: FlaskClient, endpoint: str, args: dict[str, object] | None = None, method: str = "POST"
) -> dict[str, object]:
    """Call /api/<endpoint> as nova's clients do (form field request-json); return the JSON."""
    data = {"request-json": json.dumps(args)} if args is not None else None
    response = client.open(f"/api/{endpoint}", method=method, data=data)
    assert response.status_code in (200, 404), response.status_code
    assert response.headers["Content-Type"] == "text/plain"
    return json.loads(response.get_data(as_text=True))


def api_login(client: FlaskClient, key: str) -> str:
    result = api_call(client, "login", {"apikey": key})
    assert result["status"] == "success", result
    return str(result["session"])
