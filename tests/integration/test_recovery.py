"""Nothing lost: identical uploads answered at once, and jobs whose worker is killed retried.

Fault injection with real processes: a real ``nova worker``, the real engine, ``kill -9``.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from nova.db.models import Job, JobStatus
from nova.extensions import db
from tests.integration.test_solve_apod import assert_centre, finished_job, scale_hint, upload
from tests.support.figures import record_figure
from tests.support.processes import run_worker, wait_for
from tests.support.settings import change_settings

pytestmark = pytest.mark.engine


def test_an_identical_upload_is_answered_from_the_earlier_solve(
    client: FlaskClient, apod: Path, redis_url: str
) -> None:
    data = (apod / "apod4.jpg").read_bytes()
    first = finished_job_after_worker(client, upload(client, data, "a.jpg", **scale_hint(33.0)))
    again_id = upload(client, data, "again.jpg", **scale_hint(33.0))
    # No worker runs: the answer is there at once, with its own job id and files.
    assert redis.Redis.from_url(redis_url).llen("rq:queue:default") == 0
    again = finished_job(client, again_id)
    assert again.status == "success" and again.id != first.id
    assert again.calibration.ra == first.calibration.ra
    assert again.calibration.id != first.calibration.id
    assert client.get(f"/wcs_file/{again.id}").data == client.get(f"/wcs_file/{first.id}").data
    assert [o.name for o in again.user_image.sky_objects] == [
        o.name for o in first.user_image.sky_objects
    ]
    assert again.user_image.original_filename == "again.jpg"
    # Other parameters mean another solve.
    other = upload(client, data, "b.jpg", **scale_hint(33.0), tweak_order="3")
    assert client.get(f"/status/{other}/state").get_json()["images"] == []
    assert redis.Redis.from_url(redis_url).llen("rq:queue:default") == 1
    # And the operator can switch reuse off (e.g. after adding index files).
    change_settings(client.application, REUSE_RESULTS=False)
    third = upload(client, data, "c.jpg", **scale_hint(33.0))
    assert client.get(f"/status/{third}/state").get_json()["images"] == []
    assert redis.Redis.from_url(redis_url).llen("rq:queue:default") == 2


def test_only_own_and_public_solves_are_reused_and_copies_carry_nothing_of_them(
    app: Flask, apod: Path, redis_url: str
) -> None:
    """A private solve is never copied to another user nor revealed by an instant answer; a
    public one is, without its file name, job id or server paths (issue 16, M4)."""
    from tests.integration.test_site import sign_up

    data = (apod / "apod4.jpg").read_bytes()
    ann, bob, anonymous = app.test_client(), app.test_client(), app.test_client()
    sign_up(ann, "ann@example.org")
    sign_up(bob, "bob@example.org")
    private = {**scale_hint(33.0), "publicly_visible": "n"}
    secret = finished_job_after_worker(ann, upload(ann, data, "secret-target.jpg", **private))
    queue = redis.Redis.from_url(redis_url)
    for other in (bob, anonymous):
        waiting = upload(other, data, "mine.jpg", **scale_hint(33.0))
        assert other.get(f"/status/{waiting}/state").get_json()["images"] == [], (
            "someone else's private solve answered this upload"
        )
    assert queue.llen("rq:queue:default") == 2
    own = finished_job(ann, upload(ann, data, "again.jpg", **private))
    assert own.status == "success", "the uploader's own private solve is reused"
    queue.delete("rq:queue:default")

    public = finished_job_after_worker(ann, upload(ann, data, "ann-public.jpg", **scale_hint(32.9)))
    copy = finished_job(bob, upload(bob, data, "bob.jpg", **scale_hint(32.9)))
    assert copy.status == "success" and copy.user_image.original_filename == "bob.jpg"
    assert bob.get(f"/wcs_file/{copy.id}").data == ann.get(f"/wcs_file/{public.id}").data
    log = bob.get(f"/joblog/{copy.id}").get_data(as_text=True)
    assert str(public.id) not in log and str(secret.id) not in log
    assert str(app.config["DATA_DIR"]) not in log and "/" not in log
    kmz = bob.get(f"/kml_file/{copy.id}")
    assert kmz.status_code == 200
    with zipfile.ZipFile(io.BytesIO(kmz.data)) as archive:
        text = " ".join(archive.read(name).decode("latin-1") for name in archive.namelist())
    assert "ann-public" not in text and "bob.jpg" in text


def finished_job_after_worker(client: FlaskClient, submission_id: int) -> Job:
    run_worker()
    job = finished_job(client, submission_id)
    assert job.status == "success", job.failure_reason
    return job


def children(pid: int) -> list[int]:
    result = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in result.stdout.split()]


def job_state(job_id: int) -> Job:
    db.session.rollback()  # end the read transaction: see what the worker committed
    job = db.session.get(Job, job_id)
    assert job is not None
    return job


def engines_in(data_dir: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", "astrometry-engine|solve-field"], capture_output=True, text=True
    ).stdout.split()
    mine = []
    for pid in found:
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(data_dir):
                mine.append(int(pid))
        except OSError:
            continue
    return mine


def test_jobs_whose_worker_is_killed_mid_solve_are_retried_and_end(
    client: FlaskClient,
    apod: Path,
    worker_process: Callable[[], subprocess.Popen[bytes]],
    nova_env: dict[str, str],  # type: ignore[no-untyped-def]
) -> None:
    """kill -9 the solving work horse, then the whole worker: all 10 jobs still end."""
    # Two slow solves first (apod1 at full resolution with a scale hint: seconds, long enough
    # to be caught solving), then eight quick hinted ones (apod4, apod2).
    slow = {**scale_hint(1.5), "downsample_factor": "1"}
    plan = [("apod1", slow)] * 2 + [("apod4", scale_hint(33.0)), ("apod2", scale_hint(4.5))] * 4
    submissions = [
        upload(
            client,
            (apod / f"{name}.jpg").read_bytes(),
            f"{name}-{i}.jpg",
            **{**hint, "tweak_order": str(2 + i % 4)},
        )
        for i, (name, hint) in enumerate(plan)
    ]
    names = dict(zip(submissions, (name for name, _ in plan), strict=True))
    first_worker = worker_process()
    faults = 0

    def solving_job(other_than: int = 0) -> Job | None:
        db.session.rollback()  # end the read transaction: see what the worker committed
        return db.session.scalars(
            select(Job).where(
                Job.status == JobStatus.SOLVING, Job.stage == "solving", Job.id != other_than
            )
        ).first()

    # Fault 1: kill -9 the work horse while the engine runs.
    assert wait_for(lambda: solving_job() is not None, 60, 0.05)
    victim = solving_job()
    horses = children(first_worker.pid)
    assert horses, "the worker forks a work horse for each job"
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    faults += 1
    # The engine dies with its horse: no orphan keeps a core busy.
    assert wait_for(lambda: not engines_in(nova_env["NOVA_DATA_DIR"]), 60, 0.1)

    # Fault 2: kill -9 the whole worker (parent and horse) while the next job solves.
    assert wait_for(lambda: solving_job(other_than=victim.id) is not None, 60, 0.05)
    second_victim = solving_job(other_than=victim.id)
    horses = children(first_worker.pid)  # RQ may put its horse in a process group of its own
    os.killpg(first_worker.pid, signal.SIGKILL)
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    first_worker.wait()
    faults += 1
    worker_process()  # a new worker (as after a reboot) picks everything up

    def all_ended() -> bool:
        db.session.rollback()
        states = [finished_job_state(client, sub) for sub in submissions]
        return all(state in ("success", "failure") for state in states)

    assert wait_for(all_ended, 240, 0.5), [finished_job_state(client, s) for s in submissions]
    ended = {sub: finished_job(client, sub) for sub in submissions}
    retried = [job for job in ended.values() if job.attempts > 1]
    solved = [job for job in ended.values() if job.status == "success"]
    record_figure(
        f"fault injection: {faults} kill -9 during {len(ended)} solves -> {len(ended)} ended "
        f"({len(solved)} solved, {len(retried)} after a retry, "
        f"{len(ended) - len(solved)} failed with a reason), 0 stuck"
    )
    for sub, job in ended.items():
        # Solved after the retry, or failed with the reason; never stuck, never silent.
        if job.status == "success":
            assert_centre(job, names[sub])
        else:
            assert job.failure_reason, job.id
    assert victim.id in [job.id for job in retried], [(j.id, j.attempts) for j in ended.values()]
    assert second_victim.id in [job.id for job in retried]
    assert not engines_in(nova_env["NOVA_DATA_DIR"])


def finished_job_state(client: FlaskClient, submission_id: int) -> str:
    state = client.get(f"/status/{submission_id}/state").get_json()
    if not state["images"] or state["images"][0]["job"] is None:
        return "waiting"
    return state["images"][0]["job"]["status"]


def test_a_job_that_keeps_killing_its_worker_fails_with_the_reason(
    client: FlaskClient,
    apod: Path,
    worker_process: Callable[[], subprocess.Popen[bytes]],
) -> None:
    from nova.db.models import utcnow
    from nova.services import intake

    submission_id = upload(client, (apod / "apod4.jpg").read_bytes(), "x.jpg", **scale_hint(33.0))
    (job_id,) = intake.process_submission(submission_id)  # recognised, not queued to solve
    # As if three workers in a row had died on it: solving, no heartbeat for long.
    job = db.session.get(Job, job_id)
    job.status, job.stage, job.attempts = JobStatus.SOLVING, "solving", 3
    job.heartbeat_at = utcnow().replace(year=2000)
    db.session.commit()
    worker_process()
    assert wait_for(lambda: job_state(job_id).status == JobStatus.FAILURE, 120, 0.2)
    reason = job_state(job_id).failure_reason
    assert reason == "The worker stopped (killed or crashed) while solving, 3 times; giving up."
    state = client.get(f"/status/{submission_id}/state").get_json()
    assert state["finished"] and state["images"][0]["job"]["failure_reason"] == reason
