"""Database migrations: an empty database and one made by release 0.1.0 both reach this
release's schema with `nova init-db`, and nothing starts on a database that was not migrated."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from sqlalchemy import inspect

from nova import create_app
from nova.db.models import Job, Submission, User
from nova.db.schema import current_revision, head_revision
from nova.extensions import db
from tests.support.api import api_login
from tests.support.db import drop_everything
from tests.support.paths import REPO
from tests.support.processes import free_port, wait_for

PROJECT_ROOT = REPO
# Release 0.1.0 (tag v0.1.0): the last release before migrations, tables made by create_all().
RELEASE_0_1_COMMIT = "3eb53afe7a9ab8b843642601165043949c09b55f"
UNREACHABLE_REDIS = "redis://127.0.0.1:9/0"  # the discard port: enqueues fail at once


def nova(*args: str, env: dict[str, str], cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nova", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def empty_database(nova_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """This test's database (SQLite file or the shared PostgreSQL one), with no tables."""
    app = create_app()
    with app.app_context():
        drop_everything()
        db.engine.dispose()
    yield nova_env
    with app.app_context():
        drop_everything()
        db.engine.dispose()


def schema_differences(app: Flask) -> list[object]:
    """What autogenerate would still change to make the database match the models."""
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def test_init_db_builds_the_models_schema_from_an_empty_database(
    empty_database: dict[str, str],
) -> None:
    first = nova("init-db", env=empty_database)
    assert first.returncode == 0, first.stderr
    assert f"from revision none (empty database) to {head_revision()}" in first.stdout
    app = create_app()
    assert schema_differences(app) == []
    with app.app_context():
        assert current_revision() == head_revision()
        db.engine.dispose()
    again = nova("init-db", env=empty_database)
    assert again.returncode == 0, again.stderr
    assert f"schema already at revision {head_revision()}" in again.stdout


@pytest.fixture
def release_0_1(tmp_path: Path) -> Path:
    """Release 0.1.0's code, unpacked from git, to build a database the way it did."""
    target = tmp_path / "release-0.1"
    target.mkdir()
    archive = tmp_path / "release-0.1.tar"
    made = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "archive", "-o", str(archive), RELEASE_0_1_COMMIT],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, f"release 0.1.0 is not in this clone's history: {made.stderr}"
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def test_a_release_0_1_database_is_migrated_with_its_data(
    empty_database: dict[str, str], release_0_1: Path
) -> None:
    old_env = {
        **empty_database,
        "PYTHONPATH": str(release_0_1),
        "NOVA_REDIS_URL": UNREACHABLE_REDIS,
    }
    made = nova("init-db", env=old_env, cwd=release_0_1)
    assert made.returncode == 0, made.stderr
    created = nova("create-user", "observer@example.org", env=old_env, cwd=release_0_1)
    assert created.returncode == 0, created.stderr
    api_key = created.stdout.split("API key: ")[1].strip()
    # An upload as release 0.1.0 stored it (redis is away: it stays queued in the database).
    upload = (
        "from nova import create_app, services\n"
        "from nova.params import SolveParams\n"
        "from nova.accounts import user_for_api_key\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        f"    user = user_for_api_key({api_key!r})\n"
        "    options = services.SubmissionOptions(user=user, params=SolveParams())\n"
        "    sub = services.submit_star_list([10.0, 20.0, 30.0], [5.0, 6.0, 7.0], options)\n"
        "    print(sub.id)\n"
    )
    uploaded = subprocess.run(
        [sys.executable, "-c", upload],
        env={**os.environ, **old_env},
        cwd=release_0_1,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert uploaded.returncode == 0, uploaded.stderr
    submission_id = int(uploaded.stdout.split()[-1])
    app = create_app()
    with app.app_context():
        tables = set(inspect(db.engine).get_table_names())
        assert "submissions" in tables and "alembic_version" not in tables
        db.engine.dispose()

    # This release refuses the old database until it is migrated...
    worker = nova("worker", "--burst", env=empty_database)
    assert worker.returncode != 0
    assert "Run `nova init-db`" in worker.stderr

    # ...which `nova init-db` does, keeping what was there.
    migrated = nova("init-db", env=empty_database)
    assert migrated.returncode == 0, migrated.stderr
    assert f"from revision 0001 to {head_revision()}" in migrated.stdout
    assert schema_differences(app) == []
    with app.app_context():
        user = db.session.query(User).filter_by(email="observer@example.org").one()
        submission = db.session.get(Submission, submission_id)
        assert submission is not None and submission.user_id == user.id
        assert submission.original_filename == "json-xy"
        db.session.remove()
        db.engine.dispose()
    client = create_app({"TESTING": True}).test_client()
    session = api_login(client, api_key)  # the key made by release 0.1.0 still signs in
    assert session
    assert client.get(f"/status/{submission_id}").status_code == 200

    # The submission that waited in the database is processed by this release's worker.
    worked = nova("worker", "--burst", env=empty_database)
    assert worked.returncode == 0, worked.stderr
    with app.app_context():
        submission = db.session.get(Submission, submission_id)
        assert submission.processing_finished is not None
        jobs = db.session.query(Job).all()
        assert [job.user_image.submission_id for job in jobs] == [submission_id]
        db.session.remove()
        db.engine.dispose()


def test_the_web_server_refuses_an_unmigrated_database(empty_database: dict[str, str]) -> None:
    port = free_port()
    env = {**os.environ, **empty_database}
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "nova.wsgi:app"]
    refused = subprocess.run(
        command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0
    assert "has no Nova schema" in refused.stderr
    assert "Run `nova init-db`" in refused.stderr

    assert nova("init-db", env=empty_database).returncode == 0
    server = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stderr=subprocess.DEVNULL)
    try:

        def healthy() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).ok
            except requests.RequestException:  # not listening yet, or slow on a busy machine
                return False

        assert wait_for(healthy, 120), "gunicorn did not serve after init-db"
    finally:
        server.terminate()
        server.wait(timeout=30)
