"""Fault injection with real parts: redis restarted without persistence during uploads, and
the PostgreSQL server stopped under the web application and a worker.

Each test runs its own redis-server or PostgreSQL server (never the session's), so stopping
it disturbs no other test.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import redis
import requests
from astropy.io import fits
from flask import Flask
from flask.testing import FlaskClient
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.utils import utcformat
from sqlalchemy import select

from nova.db.models import Job, Submission
from nova.extensions import db
from nova.infra import jobqueue
from nova.services import reconcile
from tests.integration.test_solve_apod import scale_hint, upload
from tests.support.figures import record_figure
from tests.support.processes import (
    PostgresServer,
    RedisServer,
    run_worker,
    wait_for,
)
from tests.support.stack import live_stack

pytestmark = pytest.mark.engine


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.stop()


def star_list_of_apod4(client: FlaskClient, apod: Path) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Solve apod4 once (real engine) and return its 150 brightest detected stars."""
    submission_id = upload(client, (apod / "apod4.jpg").read_bytes(), "apod4.jpg", **scale_hint(33))
    run_worker()
    state = client.get(f"/status/{submission_id}/state").get_json()
    job = state["images"][0]["job"]
    assert job["status"] == "success", job
    with fits.open(io.BytesIO(client.get(f"/axy_file/{job['id']}").data)) as hdus:
        x, y = np.asarray(hdus[1].data["X"]), np.asarray(hdus[1].data["Y"])
        width, height = int(hdus[1].header["IMAGEW"]), int(hdus[1].header["IMAGEH"])
    return x[:150], y[:150], width, height


def star_list_text(x: np.ndarray, y: np.ndarray, variant: int) -> bytes:
    # Each upload a different file: a trailing comment changes the bytes, not the stars.
    lines = [f"{a:.3f} {b:.3f}" for a, b in zip(x, y, strict=True)]
    return ("\n".join(lines) + f"\n# upload {variant}\n").encode()


def submission_outcomes(client: FlaskClient, ids: list[int]) -> dict[str, int]:
    counts = {"ended": 0, "success": 0, "failure": 0, "waiting": 0}
    db.session.rollback()  # the test's session outlives requests: see what the worker committed
    for submission_id in ids:
        state = client.get(f"/status/{submission_id}/state").get_json()
        jobs = [image["job"] for image in state["images"] if image["job"]]
        if state["finished"] and jobs:
            counts["ended"] += 1
            counts[jobs[0]["status"]] += 1
        else:
            counts["waiting"] += 1
    return counts


@pytest.fixture
def redis_url(private_redis: RedisServer) -> str:
    """This module's tests use their own redis (nova_env reads this fixture)."""
    return private_redis.url


def test_redis_restarted_without_persistence_during_uploads_loses_nothing(
    app: Flask,
    client: FlaskClient,
    apod: Path,
    private_redis: RedisServer,
    worker_process: Callable[[], subprocess.Popen[bytes]],
) -> None:
    x, y, width, height = star_list_of_apod4(client, apod)
    fields = {**scale_hint(33), "image_width": str(width), "image_height": str(height)}
    worker = worker_process()
    connection = redis.Redis.from_url(private_redis.url)
    assert wait_for(lambda: connection.scard("rq:workers") > 0, 60), "the worker did not start"
    submissions: list[int] = []
    for number in range(50):
        if number == 15:
            # The worker is busy with the first uploads when redis goes away.
            assert wait_for(lambda: submission_outcomes(client, submissions)["ended"] >= 3, 60)
            private_redis.stop()  # uploads 15-29 arrive while redis is down
        if number == 30:
            time.sleep(2)  # the worker meets the closed port a few times
            private_redis.start()  # back, empty: every queue entry made before is gone
        data = star_list_text(x, y, number)
        submissions.append(upload(client, data, f"stars-{number}.txt", **fields))

    def all_ended() -> bool:
        return submission_outcomes(client, submissions)["waiting"] == 0

    ended = wait_for(all_ended, 240, 1.0)
    outcome = submission_outcomes(client, submissions)
    worker_alive = worker.poll() is None
    record_figure(
        f"redis restart without persistence: {len(submissions)} uploads -> "
        f"{len(set(submissions))} submissions, {outcome['ended']} jobs ended "
        f"({outcome['success']} solved, {outcome['failure']} failed), "
        f"{outcome['waiting']} lost; worker survived: {worker_alive}"
    )
    assert ended, outcome
    assert len(set(submissions)) == 50
    assert outcome == {"ended": 50, "success": 50, "failure": 0, "waiting": 0}
    assert worker_alive


def test_entries_left_started_or_off_their_queue_by_a_redis_restart_are_queued_again(
    app: Flask, client: FlaskClient, apod: Path, private_redis: RedisServer
) -> None:
    """Redis with persistence (compose's appendonly) restarted mid-job: the worker quits
    and the entry it held stays "started" in redis, with nobody running it. The reconciler
    queues it again once its heartbeat is silent, not only when RQ's job timeout expires.
    Restarted mid-enqueue, an entry can stay "queued" without being on its queue: queued
    again too. (Both seen in test_compose.py's restart of redis.)"""
    photo = (apod / "apod4.jpg").read_bytes()
    submission_id = upload(client, photo, "apod4.jpg", **scale_hint(33))
    rq_id = f"submission-{submission_id}"
    connection = redis.Redis.from_url(private_redis.url)
    entry = RQJob.fetch(rq_id, connection=connection)

    queue_key = jobqueue.get_queue(jobqueue.SUBMISSIONS_QUEUE).key

    def left_started(seconds_ago: float) -> None:
        # What a worker does when it takes the entry (off the queue, "started"), then its
        # last heartbeat.
        connection.lrem(queue_key, 0, rq_id)
        beat = datetime.now(UTC) - timedelta(seconds=seconds_ago)
        entry.set_status(RQStatus.STARTED)
        connection.hset(entry.key, mapping={"started_at": utcformat(beat)})
        connection.hset(entry.key, "last_heartbeat", utcformat(beat))

    with app.app_context():
        left_started(5)  # a live worker's entry: left alone
        assert jobqueue.is_waiting_or_running(rq_id)
        assert reconcile.reconcile(3, 10)["requeued"] == 0
        silent = jobqueue.STARTED_SILENCE.total_seconds() + 5
        left_started(silent)  # its worker is gone
        assert not jobqueue.is_waiting_or_running(rq_id)
        assert reconcile.reconcile(3, 10)["requeued"] == 1
        assert RQJob.fetch(rq_id, connection=connection).get_status() == RQStatus.QUEUED
        assert jobqueue.is_waiting_or_running(rq_id)
        # "queued" but not on its queue (redis stopped between the two writes of an enqueue).
        assert connection.lrem(queue_key, 0, rq_id) == 1
        assert not jobqueue.is_waiting_or_running(rq_id)
        assert reconcile.reconcile(3, 10)["requeued"] == 1
        assert connection.lpos(queue_key, rq_id) is not None
        # A bare heartbeat field (a worker refreshed an entry redis had dropped) is no entry.
        ghost = "submission-999999"
        connection.hset(f"rq:job:{ghost}", "last_heartbeat", utcformat(datetime.now(UTC)))
        assert not jobqueue.is_waiting_or_running(ghost)
    run_worker()
    db.session.rollback()
    assert submission_outcomes(client, [submission_id])["success"] == 1


# -- the database stops -------------------------------------------------------------------


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        server.createdb("nova_fault")
        yield server
    finally:
        server.remove()


def finished(client: FlaskClient, submission_id: int) -> bool:
    db.session.rollback()  # the test's session outlives requests: see what the worker committed
    return bool(client.get(f"/status/{submission_id}/state").get_json()["finished"])


def stored_uploads(app: Flask) -> set[str]:
    root = Path(app.config["DATA_DIR"]) / "uploads"
    return {path.name for path in root.rglob("*") if path.is_file()}


class TestDatabaseOutage:
    @pytest.fixture
    def database_url(self, private_postgres: PostgresServer) -> str:
        """These tests use their own PostgreSQL server, which they stop and start."""
        return private_postgres.url("nova_fault")

    def test_requests_get_503_while_the_database_is_down_and_recover_by_themselves(
        self,
        app: Flask,
        client: FlaskClient,
        apod: Path,
        make_user: Callable[[str], tuple[int, str]],
        private_postgres: PostgresServer,
        worker_process: Callable[[], subprocess.Popen[bytes]],
    ) -> None:
        _, key = make_user("db@example.org")
        api = app.test_client()
        session_key = json.loads(
            api.post("/api/login", data={"request-json": json.dumps({"apikey": key})}).data
        )["session"]
        photo = (apod / "apod4.jpg").read_bytes()
        before = upload(client, photo, "before.jpg", **scale_hint(33))
        worker = worker_process()
        assert wait_for(lambda: finished(client, before), 120, 0.5)
        job_id = client.get(f"/status/{before}/state").get_json()["images"][0]["job"]["id"]
        db.session.remove()
        files_before = stored_uploads(app)

        api_form = {"request-json": json.dumps({"session": session_key, **scale_hint(33)})}
        requests_during_outage: dict[str, Callable[[], object]] = {
            "result page": lambda: client.get(f"/user_images/{job_id}"),
            "status page": lambda: client.get(f"/status/{before}"),
            "status JSON": lambda: client.get(f"/status/{before}/state"),
            "API job": lambda: api.get(f"/api/jobs/{job_id}"),
            "API submission": lambda: api.post(f"/api/submissions/{before}", data=api_form),
            "API login": lambda: api.post(
                "/api/login", data={"request-json": json.dumps({"apikey": key})}
            ),
            "API upload": lambda: api.post(
                "/api/upload",
                data={**api_form, "file": (io.BytesIO(photo + b"1"), "a.jpg")},
                content_type="multipart/form-data",
            ),
            "form upload": lambda: client.post(
                "/upload",
                data={"file": (io.BytesIO(photo + b"2"), "b.jpg"), **scale_hint(33)},
                content_type="multipart/form-data",
            ),
            "wcs file": lambda: client.get(f"/wcs_file/{job_id}"),
        }
        answers: dict[str, tuple[int, str | None, str]] = {}
        private_postgres.stop()
        try:
            for name, send in requests_during_outage.items():
                response = send()
                answers[name] = (
                    response.status_code,  # type: ignore[attr-defined]
                    response.headers.get("Retry-After"),  # type: ignore[attr-defined]
                    response.get_data(as_text=True),  # type: ignore[attr-defined]
                )
            time.sleep(3)  # a few seconds down: the worker's reconciler meets the outage too
            worker_survived_outage = worker.poll() is None
        finally:
            private_postgres.start()
        for name, (status, retry_after, body) in answers.items():
            assert status == 503 and retry_after, (name, status, body[:300])
            if name.startswith("API"):
                assert json.loads(body)["status"] == "error", (name, body)
            assert "database is unavailable" in body, (name, body[:300])

        # Back without restarting anything: the pool's pre-ping replaces dead connections.
        assert client.get(f"/status/{before}/state").status_code == 200
        assert api.get(f"/api/jobs/{job_id}").status_code == 200
        after = upload(client, photo + b"3", "after.jpg", **scale_hint(33))
        # The worker that lived through the outage solves it.
        assert wait_for(lambda: finished(client, after), 120, 0.5)
        state = client.get(f"/status/{after}/state").get_json()
        assert state["images"][0]["job"]["status"] == "success", state

        # Nothing half-written: every submission row has its file; the files stored by the
        # uploads that failed have no row, so no page, list or URL can show them.
        db.session.remove()
        rows = db.session.scalars(select(Submission)).all()
        assert sorted(row.id for row in rows) == sorted([before, after])
        stored = stored_uploads(app)
        assert all(row.upload_hash in stored for row in rows)
        orphans = stored - files_before - {row.upload_hash for row in rows}
        assert len(db.session.scalars(select(Job)).all()) == 2
        record_figure(
            f"database outage: {len(answers)} requests while PostgreSQL was down -> "
            f"{sum(1 for s, r, _ in answers.values() if s == 503 and r)} answered 503 with "
            f"Retry-After, 0 half-written rows ({len(orphans)} stored file(s) without a row, "
            f"never shown); recovered without a restart; worker survived: "
            f"{worker_survived_outage and worker.poll() is None}"
        )
        assert worker_survived_outage and worker.poll() is None


def test_nova_up_replaces_a_worker_that_dies(tmp_path: Path, apod: Path) -> None:
    """``nova up`` supervises its workers: one killed with -9 is replaced and work goes on."""
    with live_stack(tmp_path, NOVA_WORKERS="1") as stack:

        def workers() -> set[int]:
            found = subprocess.run(
                ["pgrep", "-P", str(stack.process.pid), "-f", "nova worker"],
                capture_output=True,
                text=True,
            )
            return {int(pid) for pid in found.stdout.split()}

        assert wait_for(lambda: len(workers()) == 1, 120)
        (first,) = workers()
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: len(workers()) == 1 and first not in workers(), 120)
        key = re.search(r"API key: (\w+)", stack.nova("create-user", "up@example.org"))
        assert key
        api = requests.Session()
        login = api.post(
            f"{stack.base}/api/login",
            data={"request-json": json.dumps({"apikey": key.group(1)})},
            timeout=30,
        ).json()
        arguments = {"session": login["session"], "scale_units": "degwidth"}
        arguments |= {"scale_lower": 25, "scale_upper": 40}
        with (apod / "apod4.jpg").open("rb") as photo:
            answer = api.post(
                f"{stack.base}/api/upload",
                data={"request-json": json.dumps(arguments)},
                files={"file": ("apod4.jpg", photo)},
                timeout=60,
            ).json()

        def job_status() -> str | None:
            jobs = api.get(f"{stack.base}/api/submissions/{answer['subid']}", timeout=10).json()
            if not jobs["jobs"] or jobs["jobs"][0] is None:
                return None
            return api.get(f"{stack.base}/api/jobs/{jobs['jobs'][0]}", timeout=10).json()["status"]

        assert wait_for(lambda: job_status() in ("success", "failure"), 120, 0.5)
        status = job_status()
        record_figure(f"nova up supervision: worker killed -9 -> replaced; next upload {status}")
        assert status == "success"
        assert stack.process.poll() is None, "the stack kept running"
