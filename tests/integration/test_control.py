"""The owner's control over their work (issue 18): cancel a job, delete a submission, and see
how good a solution is. Real redis, real workers, the real engine on the APOD samples."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from astropy.io import fits
from flask import Flask
from flask.testing import FlaskClient
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from sqlalchemy import select

from nova.db.models import Album, Job, JobStatus, Submission, UserImage
from nova.extensions import db
from nova.infra import jobqueue
from nova.infra.cancellation import CANCEL_REASON
from nova.services import intake, queueing, reconcile
from tests.support.api import api_call, api_login
from tests.support.figures import record_figure
from tests.support.processes import run_worker, wait_for

HINTS = {"scale_units": "degwidth", "scale_lower": 20, "scale_upper": 45}


def star_list(apod: Path, name: str = "apod4") -> dict[str, object]:
    with fits.open(apod / f"{name}.xyls") as hdus:
        return {
            "x": [float(v) for v in hdus[1].data["X"]],
            "y": [float(v) for v in hdus[1].data["Y"]],
            "image_width": 719,
            "image_height": 507,
        }


def upload_photo(client: FlaskClient, session: str, path: Path, **options: object) -> int:
    form = {
        "request-json": json.dumps({"session": session, **options}),
        "file": (path.open("rb"), path.name),
    }
    answer = json.loads(client.post("/api/upload", data=form).get_data(as_text=True))
    assert answer["status"] == "success", answer
    return int(answer["subid"])


def job_of(submission_id: int) -> Job:
    db.session.expire_all()
    submission = db.session.get(Submission, submission_id)
    return submission.user_images[0].jobs[0]


def solving(submission_id: int) -> bool:
    """The submission's job is being solved (False while the upload is still being read)."""
    db.session.expire_all()
    images = db.session.get(Submission, submission_id).user_images
    return bool(images and images[0].jobs and images[0].jobs[0].status == JobStatus.SOLVING)


def engine_pids(job_id: int) -> set[int]:
    """Live processes (the process table, not Nova's own bookkeeping) working in the job's
    work directory: every command the solver starts names it (``--dir``, ``-c``)."""
    found = set()
    marker = f"/job-{job_id}-".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # ended meanwhile
        if marker in cmdline and state != "Z":
            found.add(int(entry.name))
    return found


def engine_running(job_id: int) -> bool:
    for pid in engine_pids(job_id):
        try:
            if b"astrometry-engine" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


@pytest.mark.engine
def test_a_running_blind_solve_is_cancelled_within_two_seconds(
    app: Flask,
    client: FlaskClient,
    make_user: Callable[[str], tuple[int, str]],
    worker_process: Callable[[], object],
    apod: Path,
) -> None:
    _, ann_key = make_user("ann@example.org")
    _, bob_key = make_user("bob@example.org")
    ann = api_login(client, ann_key)
    bob = api_login(app.test_client(), bob_key)
    # apod5 blind: extraction, a full-resolution retry, then a blind search of well over 20 s.
    submission_id = upload_photo(client, ann, apod / "apod5.jpg")
    worker_process()
    assert wait_for(lambda: solving(submission_id), 120)
    job_id = job_of(submission_id).id
    assert wait_for(lambda: engine_running(job_id), 120), "the engine never started"
    pids = engine_pids(job_id)
    assert pids

    # Another user cannot cancel it (nor learn that it exists).
    refused = api_call(client, f"jobs/{job_id}/cancel", {"session": bob})
    assert refused == {"status": "error", "errormessage": "job does not exist"}
    assert job_of(submission_id).status == JobStatus.SOLVING

    started = time.monotonic()
    answer = api_call(client, f"jobs/{job_id}/cancel", {"session": ann})
    assert answer == {"status": "success", "job": job_id, "job_status": "failure"}
    gone = wait_for(lambda: not (pids & engine_pids(job_id)), 60, interval=0.02)
    took = time.monotonic() - started
    assert gone, f"engine processes {pids & engine_pids(job_id)} still alive after 60 s"
    record_figure(
        f"cancel: engine processes of a blind apod5 solve gone {took:.2f} s after the request"
    )

    job = job_of(submission_id)
    assert (job.status, job.failure_reason) == (JobStatus.FAILURE, CANCEL_REASON)
    assert api_call(client, f"jobs/{job_id}", method="GET") == {"status": "failure"}
    status = api_call(client, f"submissions/{submission_id}", method="GET")
    assert status["jobs"] == [job_id] and status["job_calibrations"] == []
    assert status["processing_finished"] != "None"
    # The horse ends the job without recording anything over the cancel, and nothing new
    # starts for it (no fallback engine, no retry by the reconciler).
    assert wait_for(lambda: not jobqueue.solve_running(job_id), 120)
    assert not engine_pids(job_id)
    job = job_of(submission_id)
    assert (job.status, job.failure_reason) == (JobStatus.FAILURE, CANCEL_REASON)
    assert api_call(client, f"jobs/{job_id}/cancel", {"session": ann}) == {
        "status": "error",
        "errormessage": f"job {job_id} has ended already (failure)",
    }


def test_a_cancelled_queued_job_never_runs(
    app: Flask, client: FlaskClient, make_user: Callable[[str], tuple[int, str]], apod: Path
) -> None:
    _, ann_key = make_user("ann@example.org")
    _, bob_key = make_user("bob@example.org")
    ann, bob = api_login(client, ann_key), api_login(app.test_client(), bob_key)
    submission_id = int(
        api_call(client, "upload", {"session": ann, **star_list(apod), **HINTS})["subid"]
    )
    (job_id,) = intake.process_submission(submission_id)
    assert queueing.enqueue_solve(job_id)
    assert jobqueue.queue_position(job_id) == 1

    assert api_call(client, f"jobs/{job_id}/cancel", {"session": bob})["status"] == "error"
    assert api_call(client, f"jobs/{job_id}/cancel", {})["errormessage"] == 'no "session" in JSON.'
    assert job_of(submission_id).status == JobStatus.QUEUED

    assert api_call(client, f"jobs/{job_id}/cancel", {"session": ann})["status"] == "success"
    entry = RQJob.fetch(f"solve-{job_id}", connection=jobqueue.redis_connection())
    assert entry.get_status() == RQStatus.CANCELED
    assert jobqueue.queue_position(job_id) is None
    # A stale entry enqueued anyway (a redelivery) is refused by the worker's claim, and the
    # reconciler does not put the job back.
    assert queueing.enqueue_solve(job_id)
    reconcile.reconcile(max_attempts=3, heartbeat_seconds=10)
    run_worker()
    job = job_of(submission_id)
    assert (job.status, job.failure_reason) == (JobStatus.FAILURE, CANCEL_REASON)
    assert job.started_at is None and job.attempts == 0
    assert job.calibration is None


def test_the_status_page_cancel_button_is_the_owners(
    app: Flask, client: FlaskClient, make_user: Callable[[str], tuple[int, str]], apod: Path
) -> None:
    from tests.integration.test_retention import sign_in, sign_up, upload_stars

    sign_up(client, "cy@example.org")
    submission_id = upload_stars(client, "cy@example.org", star_list(apod))
    (job_id,) = intake.process_submission(submission_id)
    page = client.get(f"/status/{submission_id}").get_data(as_text=True)
    assert f'action="/jobs/{job_id}/cancel"' in page and 'id="delete-submission"' in page

    other = app.test_client()
    sign_up(other, "dee@example.org")
    sign_in(other, "dee@example.org")
    page = other.get(f"/status/{submission_id}").get_data(as_text=True)
    assert "/cancel" not in page and "delete-submission" not in page
    assert other.post(f"/jobs/{job_id}/cancel").status_code == 404
    assert other.post(f"/submissions/{submission_id}/delete").status_code == 404
    assert job_of(submission_id).status == JobStatus.QUEUED

    done = client.post(f"/jobs/{job_id}/cancel", follow_redirects=True).get_data(as_text=True)
    assert f"Job {job_id} is cancelled." in done and CANCEL_REASON in done
    assert job_of(submission_id).failure_reason == CANCEL_REASON


@pytest.mark.engine
def test_a_deleted_submission_is_gone_everywhere_with_its_files(
    app: Flask, client: FlaskClient, make_user: Callable[[str], tuple[int, str]], apod: Path
) -> None:
    store = app.extensions["nova.infra.storage"]
    ann_id, ann_key = make_user("ann@example.org")
    _, bob_key = make_user("bob@example.org")
    bob_client = app.test_client()
    ann, bob = api_login(client, ann_key), api_login(bob_client, bob_key)
    db.session.add(Album(user_id=ann_id, title="Spring"))
    db.session.commit()
    stars = star_list(apod)
    # A photo of Ann's own, and a star list that Bob uploads too (one stored file, shared).
    photo_sub = upload_photo(client, ann, apod / "apod4.jpg", album="Spring", **HINTS)
    stars_sub = int(api_call(client, "upload", {"session": ann, **stars, **HINTS})["subid"])
    run_worker()
    bob_sub = int(api_call(bob_client, "upload", {"session": bob, **stars, **HINTS})["subid"])
    run_worker()
    photo_job, stars_job, bob_job = (job_of(s) for s in (photo_sub, stars_sub, bob_sub))
    assert {photo_job.status, stars_job.status, bob_job.status} == {JobStatus.SUCCESS}
    photo_image = photo_job.user_image
    photo_upload = store.upload_path(photo_image.file_hash)
    shared_upload = store.upload_path(stars_job.user_image.file_hash)
    assert stars_job.user_image.file_hash == bob_job.user_image.file_hash
    tag = photo_image.tags[0].text  # a machine tag: an object in the field
    album_id = db.session.scalars(select(Album)).one().id
    assert client.get(f"/thumbnail_of_image/{photo_image.id}").status_code == 200
    photo_files = [photo_upload, store.job_dir(photo_job.id), *store.cache.glob(
        f"image-{photo_image.id}-*"
    )]  # fmt: skip
    assert all(path.exists() for path in photo_files) and len(photo_files) >= 3

    def listings() -> tuple[list[str], list[int]]:
        """Every public page listing images, and the job ids of the API's listings."""
        viewer = app.test_client()  # anonymous: public listings
        pages = [
            "/explore",
            f"/users/{ann_id}",
            f"/user_images/tag?query={tag}",
            f"/search?q={tag}",
            f"/albums/{album_id}",
        ]
        texts = [viewer.get(page).get_data(as_text=True) for page in pages]
        by_tag = api_call(viewer, f"jobs_by_tag?query={tag}&exact=1", method="GET")["job_ids"]
        mine = api_call(client, "myjobs", {"session": ann})["jobs"]
        return texts, [*by_tag, *mine]

    image_link = f"/user_images/{photo_image.id}"
    texts, job_ids = listings()
    assert all(image_link in text for text in texts)
    assert job_ids.count(photo_job.id) == 2

    # Bob may not delete Ann's submission.
    refused = api_call(bob_client, f"submissions/{photo_sub}/delete", {"session": bob})
    assert refused == {"status": "error", "errormessage": "submission does not exist"}
    assert db.session.get(Submission, photo_sub) is not None

    answer = api_call(client, f"submissions/{photo_sub}/delete", {"session": ann})
    assert answer["status"] == "success" and answer["deleted"]["jobs"] == 1
    db.session.expire_all()
    assert db.session.get(Submission, photo_sub) is None
    assert db.session.get(UserImage, photo_image.id) is None
    assert db.session.get(Job, photo_job.id) is None
    assert not any(path.exists() for path in photo_files)
    texts, job_ids = listings()
    assert not any(image_link in text for text in texts)
    assert photo_job.id not in job_ids
    assert client.get(f"/status/{photo_sub}").status_code == 404
    assert client.get(image_link).status_code == 404
    assert api_call(client, f"submissions/{photo_sub}", method="GET")["status"] == "error"
    assert api_call(client, f"jobs/{photo_job.id}", method="GET")["status"] == "error"
    assert client.get(f"/wcs_file/{photo_job.id}").status_code == 404

    # The star list Bob uploads too: Ann's copy goes, the shared stored file stays for Bob.
    assert api_call(client, f"submissions/{stars_sub}/delete", {"session": ann})["status"] == (
        "success"
    )
    assert not store.job_dir(stars_job.id).exists()
    assert shared_upload.is_file()
    assert api_call(bob_client, f"jobs/{bob_job.id}/calibration", method="GET")["ra"]
    api_call(bob_client, f"submissions/{bob_sub}/delete", {"session": bob})
    assert not shared_upload.exists()


@pytest.mark.engine
def test_deleting_a_submission_being_solved_cancels_it_first(
    app: Flask,
    client: FlaskClient,
    make_user: Callable[[str], tuple[int, str]],
    worker_process: Callable[[], object],
    apod: Path,
) -> None:
    store = app.extensions["nova.infra.storage"]
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    submission_id = upload_photo(client, session, apod / "apod5.jpg")
    worker_process()
    assert wait_for(lambda: solving(submission_id), 120)
    job_id = job_of(submission_id).id
    assert wait_for(lambda: engine_running(job_id), 120)
    answer = api_call(client, f"submissions/{submission_id}/delete", {"session": session})
    assert answer["status"] == "success"
    assert not engine_pids(job_id)
    db.session.expire_all()
    assert db.session.get(Job, job_id) is None
    assert not store.job_dir(job_id).exists()
    assert not list(store.tmp.glob(f"job-{job_id}-*"))


# One engine log line per verified match, and the index that solved.
LOG_ODDS_LINE = re.compile(
    r"log-odds ratio (?P<odds>[-\d.e+]+) \([^)]*\), (?P<match>\d+) match, \d+ conflict, "
    r"\d+ distractors, (?P<index>\d+) index\."
)
SOLVED_LINE = re.compile(r"solved with index index-tycho2-(?P<scale>\d+)")


@pytest.mark.engine
def test_quality_figures_match_the_engines_log(
    app: Flask, client: FlaskClient, make_user: Callable[[str], tuple[int, str]], apod: Path
) -> None:
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    submission_id = upload_photo(client, session, apod / "apod4.jpg", **HINTS)
    run_worker()
    job = job_of(submission_id)
    assert job.status == JobStatus.SUCCESS
    quality = api_call(client, f"jobs/{job.id}/info", method="GET")["quality"]
    assert set(quality) == {
        "log_odds",
        "matched_stars",
        "field_stars",
        "index_stars",
        "index",
        "rms_arcsec",
        "tweak_order",
    }
    log_text = client.get(f"/joblog/{job.id}").get_data(as_text=True)
    # The engine logs the match it verified before tuning it up (SIP fit, more stars): the
    # stored figures are the tuned-up match's, on the same index and its stars.
    verified = list(LOG_ODDS_LINE.finditer(log_text))[-1]
    solved = list(SOLVED_LINE.finditer(log_text))[-1]
    assert quality["index"] == 4100 + int(solved["scale"])  # tycho2 index ids are 41xx
    assert quality["index_stars"] == int(verified["index"])
    assert quality["log_odds"] >= float(verified["odds"]) > 0
    assert quality["matched_stars"] >= int(verified["match"]) >= 5
    sources = re.findall(r"(\d+) sources", log_text)
    assert quality["field_stars"] == job.sources_detected or str(quality["field_stars"]) in sources
    with fits.open(app.extensions["nova.infra.storage"].job_file(job.id, "corr.fits")) as corr:
        assert len(corr[1].data) == quality["matched_stars"]
    assert quality["tweak_order"] == 2  # nova's default tweak order, a SIP solution
    # apod4's pixels are about 2.8 arcmin: matched stars sit within a fraction of one.
    pixscale = job.calibration.pixscale
    assert 0 < quality["rms_arcsec"] < pixscale
    page = client.get(f"/user_images/{job.user_image_id}").get_data(as_text=True)
    assert f"log-odds {quality['log_odds']:.1f}" in page
    assert f"{quality['matched_stars']} of {quality['index_stars']} index stars" in page

    # A job solved before quality was recorded answers null.
    job.quality = None
    db.session.commit()
    assert api_call(client, f"jobs/{job.id}/info", method="GET")["quality"] is None
