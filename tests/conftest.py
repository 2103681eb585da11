"""Fixtures with real parts: a redis-server per session, a data directory and database per test,
and RQ workers run as real ``nova worker`` processes. The helpers live in tests/support/."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask, g
from flask.testing import FlaskClient

from nova import create_app
from nova.db.schema import init_database
from nova.extensions import db
from tests.support.db import drop_everything
from tests.support.figures import pytest_terminal_summary
from tests.support.paths import APOD
from tests.support.processes import (
    PostgresServer,
    RedisServer,
    kill_tree,
    start_worker,
)
from tests.support.samples import SolveSamples, write_solve_samples

__all__ = ["pytest_terminal_summary"]  # pytest finds its hooks in conftest.py only

# The tiers, by folder: each test gets its tier's marker (pytest -m unit|integration|system).
TIERS = ("unit", "integration", "system")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(Path(__file__).parent).parts[0]
        assert tier in TIERS, f"{item.nodeid}: every test lives in tests/unit|integration|system"
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def apod() -> Path:
    """The sample photos; their absence is a failure, never a skip."""
    assert (APOD / "apod4.jpg").is_file(), f"sample data missing: {APOD} (set NOVA_TEST_DATA)"
    return APOD


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server (Debian's binaries) on a free port, for this session."""
    server = PostgresServer()
    try:
        server.start()
        server.createdb("nova_test")
        yield server.url("nova_test")
    finally:
        server.remove()


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


@pytest.fixture
def worker_process(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real ``nova worker`` processes (fast heartbeats and reconciling) with the test's
    settings; ``start(code)`` runs ``python -c code`` instead. They depend on ``app`` so that
    they are killed, and gone, before its teardown drops the tables they may still lock."""
    monkeypatch.setenv("NOVA_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("NOVA_RECONCILE_SECONDS", "1")
    started: list[subprocess.Popen[bytes]] = []

    def start(code: str | None = None) -> subprocess.Popen[bytes]:
        process = start_worker(tmp_path / f"worker-{len(started)}.log", code)
        started.append(process)
        return process

    yield start
    for process in started:
        kill_tree(process)


@pytest.fixture
def make_user(app: Flask) -> Callable[[str], tuple[int, str]]:
    """Create users on demand; returns (user id, API key)."""
    from nova.services.accounts import create_user

    def make(email: str) -> tuple[int, str]:
        user, key = create_user(email)
        return user.id, key

    return make


@pytest.fixture(scope="session")
def solve_samples(apod: Path, tmp_path_factory: pytest.TempPathFactory) -> SolveSamples:
    return write_solve_samples(apod, tmp_path_factory.mktemp("solve-samples"))
