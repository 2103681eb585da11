"""Deleting for good: the owner's "delete this image" and retention (`nova purge`) remove rows
and files, and keep what another image still uses."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from astropy.io import fits
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from nova.db.models import Calibration, ImageTag, Job, JobStatus, Submission, UserImage, utcnow
from nova.extensions import db
from nova.services import retention
from tests.support.api import api_call, api_login
from tests.support.processes import run_worker

HINTS = {
    "scale_units": "degwidth",
    "scale_lower": 25,
    "scale_upper": 40,
    "image_width": 719,
    "image_height": 507,
}


def apod4_stars(apod: Path) -> dict[str, list[float]]:
    with fits.open(apod / "apod4.xyls") as hdus:
        return {
            "x": [float(v) for v in hdus[1].data["X"]],
            "y": [float(v) for v in hdus[1].data["Y"]],
        }


PASSWORD = "correct horse"


def sign_up(client: FlaskClient, email: str) -> None:
    """Make the account and sign in, as a new user does (the first sign-in shows the key)."""
    client.post(
        "/signup",
        data={"email": email, "display_name": email, "password": PASSWORD, "confirm": PASSWORD},
    )
    first = client.post("/signin", data={"email": email, "password": PASSWORD})
    assert first.status_code == 200 and "API key" in first.get_data(as_text=True)


def sign_in(client: FlaskClient, email: str) -> None:
    response = client.post("/signin", data={"email": email, "password": PASSWORD})
    assert response.status_code == 302, response.status_code


def upload_stars(client: FlaskClient, email: str, stars: dict[str, list[float]]) -> int:
    """Upload through nova's API as the user ``email`` (a fresh API key for the test)."""
    from nova.services.accounts import reset_api_key

    key = reset_api_key(email)
    sign_in(client, email)  # a new key ends every session: sign the browser in again
    session = api_login(client, key)
    answer = api_call(client, "upload", {"session": session, **stars, **HINTS})
    return int(answer["subid"])


def only_image(submission_id: int) -> UserImage:
    db.session.expire_all()
    return db.session.get(Submission, submission_id).user_images[0]


def upload_file_of(app: Flask, image: UserImage) -> Path:
    return app.extensions["nova.infra.storage"].upload_path(image.file_hash)


@pytest.mark.engine
def test_the_owner_deletes_an_image_with_its_files(
    app: Flask, client: FlaskClient, apod: Path
) -> None:
    stars = apod4_stars(apod)
    store = app.extensions["nova.infra.storage"]
    sign_up(client, "ann@example.org")
    ann_submission = upload_stars(client, "ann@example.org", stars)
    run_worker()
    ann_image = only_image(ann_submission)
    ann_job = ann_image.best_job
    assert ann_job.status == JobStatus.SUCCESS
    assert client.get(f"/image_rd_file/{ann_job.id}").status_code == 200  # a built product
    assert client.get(f"/user_images/{ann_image.id}").status_code == 200
    assert client.get(f"/thumbnail_of_image/{ann_image.id}").status_code == 200
    assert list(store.cache.glob(f"image-{ann_image.id}-*"))
    client.post(f"/user_images/{ann_image.id}/tags", data={"text": "mine"})

    # Bob uploads the same stars: answered from Ann's solve, sharing the stored upload.
    bob = app.test_client()
    sign_up(bob, "bob@example.org")
    bob_submission = upload_stars(bob, "bob@example.org", stars)
    bob_image = only_image(bob_submission)
    assert bob_image.file_hash == ann_image.file_hash
    bob_job = bob_image.best_job
    assert bob_job.status == JobStatus.SUCCESS

    # Bob may see Ann's public image but not delete it.
    refused = bob.post(f"/user_images/{ann_image.id}/delete", follow_redirects=True)
    assert "Only the owner can change this image." in refused.get_data(as_text=True)
    assert db.session.get(UserImage, ann_image.id) is not None

    ann_job_dir, ann_image_id = store.job_dir(ann_job.id), ann_image.id
    assert ann_job_dir.is_dir()
    deleted = client.post(f"/user_images/{ann_image_id}/delete", follow_redirects=True)
    assert f"Image {ann_image_id} and its files are deleted." in deleted.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(UserImage, ann_image_id) is None
    assert db.session.get(Submission, ann_submission) is None
    assert db.session.get(Job, ann_job.id) is None
    assert (
        db.session.scalar(
            select(func.count()).select_from(Calibration).where(Calibration.job_id == ann_job.id)
        )
        == 0
    )
    assert (
        db.session.scalar(
            select(func.count()).select_from(ImageTag).where(ImageTag.user_image_id == ann_image_id)
        )
        == 0
    )
    assert not ann_job_dir.exists()
    assert not list(store.cache.glob(f"image-{ann_image_id}-*"))
    assert client.get(f"/user_images/{ann_image_id}").status_code == 404
    # Bob's copy is untouched: its products and the shared upload stay.
    bob_image = only_image(bob_submission)
    assert upload_file_of(app, bob_image).is_file()
    assert bob.get(f"/image_rd_file/{bob_job.id}").status_code == 200
    assert api_call(bob, f"jobs/{bob_job.id}/calibration", method="GET")["ra"]

    # When the last image using it goes, so does the stored upload.
    upload_path = upload_file_of(app, bob_image)
    bob.post(f"/user_images/{bob_image.id}/delete")
    assert not upload_path.exists()
    assert not store.job_dir(bob_job.id).exists()


def test_an_image_being_solved_is_not_deleted(app: Flask, client: FlaskClient, apod: Path) -> None:
    sign_up(client, "cy@example.org")
    submission_id = upload_stars(client, "cy@example.org", apod4_stars(apod))
    from nova.services import intake

    (job_id,) = intake.process_submission(submission_id)  # a job now waits in the queue
    image = only_image(submission_id)
    page = client.post(f"/user_images/{image.id}/delete", follow_redirects=True)
    assert "still being solved" in page.get_data(as_text=True)
    assert db.session.get(Job, job_id) is not None
    with pytest.raises(retention.StillRunning):
        retention.delete_image(image)


def age(submission_id: int, days: int) -> None:
    db.session.execute(
        update(Submission)
        .where(Submission.id == submission_id)
        .values(created_at=utcnow() - timedelta(days=days))
    )
    db.session.commit()


def nova_purge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nova", "purge", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.engine
def test_purge_removes_old_anonymous_and_failed_uploads_only(
    app: Flask, client: FlaskClient, apod: Path
) -> None:
    stars = apod4_stars(apod)
    sign_up(client, "dee@example.org")
    kept_solved = upload_stars(
        client, "dee@example.org", stars
    )  # old, but a user's solved image: kept
    failed = upload_stars(
        client, "dee@example.org", {"x": [1.0, 2.0, 3.0], "y": [3.0, 1.0, 2.0]}
    )  # old, failed
    recent_failed = upload_stars(
        client, "dee@example.org", {"x": [5.0, 6.0, 7.0], "y": [7.0, 5.0, 6.0]}
    )
    anonymous = app.test_client()
    form = {"upload_type": "file", "file": ((apod / "apod4.xyls").open("rb"), "stars.xyls")}
    for name, value in HINTS.items():
        form[name] = str(value)
    answer = anonymous.post("/upload", data=form)
    assert answer.status_code == 303
    old_anonymous = int(answer.headers["Location"].rsplit("/", 1)[1])  # /status/<id>
    run_worker()
    db.session.expire_all()
    assert only_image(failed).best_job.status == JobStatus.FAILURE
    assert only_image(old_anonymous).best_job.status == JobStatus.SUCCESS
    for submission_id in (kept_solved, failed, old_anonymous):
        age(submission_id, 40)
    doomed_jobs = [only_image(s).best_job.id for s in (failed, old_anonymous)]
    store = app.extensions["nova.infra.storage"]
    assert all(store.job_dir(job_id).is_dir() for job_id in doomed_jobs)

    refused = nova_purge()
    assert refused.returncode != 0 and "NOVA_RETENTION_DAYS" in refused.stderr
    done = nova_purge("--days", "30")
    assert done.returncode == 0, done.stderr
    assert "2 submissions, 2 images, 2 jobs" in done.stdout
    db.session.expire_all()
    remaining = set(db.session.scalars(select(Submission.id)))
    assert remaining == {kept_solved, recent_failed}
    assert not any(store.job_dir(job_id).exists() for job_id in doomed_jobs)
    # The user's solved image keeps its upload, although the anonymous one had the same file.
    assert upload_file_of(app, only_image(kept_solved)).is_file()
    again = nova_purge("--days", "30")
    assert "0 submissions" in again.stdout
