"""Queues that cannot be flooded (issue 16: M7, M8): work waiting per account and per
anonymous address is capped (each image of an archive counts), a submission that keeps
killing its worker is given up like a job, and what killed work leaves in tmp/ is swept."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from nova.db.models import Job, Submission
from nova.extensions import db
from nova.services import reconcile, storage
from tests.support.api import api_call, api_login
from tests.support.processes import run_worker
from tests.support.settings import change_settings

STARS = b"".join(f"{10 + 7 * i % 500} {20 + 11 * i % 400}\n".encode() for i in range(40))


def form_upload(
    client: FlaskClient, data: bytes = STARS, address: str = "198.51.100.7", name: str = "stars.txt"
):  # type: ignore[no-untyped-def]
    return client.post(
        "/upload",
        data={"file": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
        environ_base={"REMOTE_ADDR": address},
    )


def test_waiting_work_is_capped_per_account_and_per_anonymous_address(
    app: Flask, client: FlaskClient, make_user
) -> None:  # type: ignore[no-untyped-def]
    change_settings(app, MAX_QUEUED_JOBS=3)
    for _ in range(3):
        assert form_upload(client).status_code == 303
    refused = form_upload(client)
    assert refused.status_code == 429
    assert "limit of 3 (NOVA_MAX_QUEUED_JOBS)" in refused.get_data(as_text=True)
    assert form_upload(client, address="198.51.100.8").status_code == 303  # another address
    # Through the API, per account, with nova's error envelope.
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    args = {"session": session, "x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0]}
    answers = [api_call(client, "upload", args) for _ in range(4)]
    assert [answer["status"] for answer in answers] == ["success"] * 3 + ["error"]
    assert "NOVA_MAX_QUEUED_JOBS" in str(answers[-1]["errormessage"])
    assert db.session.scalar(select(db.func.count(Submission.id))) == 7


def test_each_image_of_an_archive_counts_against_the_cap(
    app: Flask, client: FlaskClient, make_user
) -> None:  # type: ignore[no-untyped-def]
    change_settings(app, MAX_QUEUED_JOBS=4)
    os.environ["NOVA_MAX_QUEUED_JOBS"] = "4"  # the worker reads the same setting
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for number in range(6):
                info = tarfile.TarInfo(f"list-{number}.txt")
                info.size = len(STARS)
                archive.addfile(info, io.BytesIO(STARS))
        _, key = make_user("ann@example.org")
        session = api_login(client, key)
        response = client.post(
            "/api/upload",
            data={
                "request-json": json.dumps({"session": session}),
                "file": (io.BytesIO(buffer.getvalue()), "many.tar"),
            },
        )
        subid = json.loads(response.get_data(as_text=True))["subid"]
        run_worker()
        db.session.rollback()
        submission = db.session.get(Submission, subid)
        assert submission is not None and submission.error_message
        assert "the 6 images of this upload would pass the limit of 4" in submission.error_message
        jobs = db.session.scalars(select(Job)).all()
        assert [job.status for job in jobs] == ["failure"], "no solve was queued"
    finally:
        del os.environ["NOVA_MAX_QUEUED_JOBS"]


def test_a_submission_that_keeps_killing_its_worker_is_given_up(
    app: Flask, client: FlaskClient
) -> None:
    assert form_upload(client).status_code == 303
    submission = db.session.scalars(select(Submission)).one()
    # What a work horse killed while reading it leaves: counted, started, never finished.
    submission.attempts = app.config["MAX_ATTEMPTS"]
    submission.processing_started = submission.created_at
    db.session.commit()
    from nova.infra import jobqueue

    jobqueue.get_queue(jobqueue.SUBMISSIONS_QUEUE).empty()
    counts = reconcile.reconcile(app.config["MAX_ATTEMPTS"], app.config["HEARTBEAT_SECONDS"])
    assert counts["failed"] == 1 and counts["requeued"] == 0
    db.session.refresh(submission)
    assert submission.processing_finished is not None
    assert "3 times; giving up" in (submission.error_message or "")
    state = client.get(f"/status/{submission.id}/state").get_json()
    assert state["finished"] and state["images"][0]["job"]["status"] == "failure"


def test_reading_a_submission_counts_an_attempt(
    app: Flask, client: FlaskClient, apod: Path
) -> None:
    # A real star list, solved in about a second: the made-up STARS would keep the worker
    # searching blind until the job's time limit.
    assert (
        form_upload(client, (apod / "apod4.xyls").read_bytes(), name="stars.xyls").status_code
        == 303
    )
    run_worker()
    db.session.rollback()
    assert db.session.scalars(select(Submission.attempts)).one() == 1
    assert db.session.scalars(select(Job.status)).one() == "success"


def test_what_killed_work_leaves_in_tmp_is_swept(app: Flask) -> None:
    tmp = storage().tmp
    abandoned = storage().make_work_dir("job-7-")
    (abandoned / "unpacked.fits").write_bytes(b"\0" * 4096)
    current = storage().make_work_dir("job-8-")
    long_ago = time.time() - 7 * 24 * 3600
    os.utime(abandoned, (long_ago, long_ago))
    counts = reconcile.reconcile(app.config["MAX_ATTEMPTS"], app.config["HEARTBEAT_SECONDS"])
    assert counts["swept"] == 1
    assert not abandoned.exists() and current.exists()
    assert sorted(path.name for path in tmp.iterdir()) == [current.name]
