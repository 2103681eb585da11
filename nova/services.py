"""State changes: every function here changes rows and commits; queueing happens after commit."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import requests
from astropy.io import fits
from flask import current_app
from sqlalchemy import select, update

from . import queue
from .calibration import CalibrationNumbers
from .extensions import db
from .inputs import PreparedInput, UnsupportedInput, prepare_input
from .models import (
    Album,
    Calibration,
    ImageTag,
    Job,
    JobStatus,
    SkyObject,
    Submission,
    User,
    UserImage,
    utcnow,
)
from .params import SolveParams
from .storage import Storage, UploadTooLarge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmissionOptions:
    """What a submission carries besides its data: who, how visible, which licence, album."""

    params: SolveParams
    user: User | None = None
    publicly_visible: str = "y"
    allow_commercial_use: str = "d"
    allow_modifications: str = "d"
    via_api: bool = False
    album: Album | None = None


def storage() -> Storage:
    return current_app.extensions["nova.storage"]


def basename(filename: str | None) -> str:
    """The last component of a client-side path, split on both / and \\ (clients send both)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:256]


def _new_submission(options: SubmissionOptions, **fields: object) -> Submission:
    visible = "y" if options.user is None else options.publicly_visible  # anonymous: public
    return Submission(
        user_id=options.user.id if options.user else None,
        via_api=options.via_api,
        publicly_visible=visible,
        allow_commercial_use=options.allow_commercial_use,
        allow_modifications=options.allow_modifications,
        album_id=options.album.id if options.album else None,
        **options.params.as_dict(),
        **fields,
    )


def submit_file(path: Path, filename: str | None, options: SubmissionOptions) -> Submission:
    """Move an uploaded file (already on the data filesystem) into the store and queue it.

    The file is recognised again on the worker, which is where URL downloads end up too.
    """
    sha1 = storage().store_file(path)
    submission = _new_submission(options, upload_hash=sha1, original_filename=basename(filename))
    db.session.add(submission)
    db.session.commit()
    queue.enqueue_submission(submission.id)
    return submission


def submit_star_list(x: list[float], y: list[float], options: SubmissionOptions) -> Submission:
    """Store x/y positions sent as JSON (brightest first) as a FITS table and queue it."""
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="x", format="D", array=np.asarray(x, dtype=np.float64)),
            fits.Column(name="y", format="D", array=np.asarray(y, dtype=np.float64)),
        ]
    )
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    buffer.seek(0)
    sha1, _ = storage().store_stream(buffer)
    submission = _new_submission(options, upload_hash=sha1, original_filename="json-xy")
    db.session.add(submission)
    db.session.commit()
    queue.enqueue_submission(submission.id)
    return submission


def find_album(user: User, title: str) -> Album | None:
    """The caller's own album with this title (nova searched every user's albums)."""
    return db.session.scalars(
        select(Album).where(Album.user_id == user.id, Album.title == title).order_by(Album.id)
    ).first()


def submit_url(url: str, options: SubmissionOptions) -> Submission:
    submission = _new_submission(options, url=url, original_filename=basename(urlparse(url).path))
    db.session.add(submission)
    db.session.commit()
    queue.enqueue_submission(submission.id)
    return submission


def validate_url(url: str) -> str:
    """Accept only absolute http(s) URLs; raise ValueError with a message otherwise."""
    url = url.strip()
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("The URL must start with http:// or https:// and name a host.")
    if len(url) > 2048:
        raise ValueError("The URL is longer than 2048 characters.")
    return url


def quick_check_upload(path: Path) -> None:
    """Refuse a file that is certainly not solvable before a submission is created."""
    work_dir = storage().make_work_dir("check-")
    try:
        prepare_input(
            path,
            work_dir,
            max_pixels=current_app.config["MAX_IMAGE_PIXELS"],
            max_uncompressed_bytes=current_app.config["MAX_CONTENT_LENGTH"],
        )
    finally:
        storage().discard(work_dir)


# -- worker side ---------------------------------------------------------------------------


def _download(url: str, max_bytes: int, timeout: float) -> tuple[str, str]:
    """Fetch ``url`` into the upload store with a size and a total-time limit."""
    deadline = time.monotonic() + timeout
    with requests.get(
        url, stream=True, timeout=min(timeout, 30), headers={"User-Agent": "nova-solver"}
    ) as response:
        response.raise_for_status()

        class _Limited:
            def read(self, size: int = -1) -> bytes:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the download took longer than {timeout:g} s")
                return next(chunks, b"")

        chunks = response.iter_content(chunk_size=1 << 16)
        sha1, _ = storage().store_stream(_Limited(), max_bytes=max_bytes)  # type: ignore[arg-type]
    return sha1, basename(urlparse(response.url).path)


def _fail_submission(submission: Submission, message: str, file_hash: str | None) -> None:
    """Record a submission that yields nothing solvable, with a failed job so pollers stop."""
    now = utcnow()
    submission.error_message = message
    submission.processing_finished = now
    image = UserImage(
        submission=submission,
        user_id=submission.user_id,
        file_hash=file_hash,
        kind="unsupported",
        width=0,
        height=0,
        original_filename=submission.original_filename,
        publicly_visible=submission.publicly_visible,
    )
    db.session.add(image)
    db.session.add(
        Job(
            user_image=image,
            status=JobStatus.FAILURE,
            stage="failed",
            started_at=now,
            finished_at=now,
            failure_reason=message,
        )
    )
    db.session.commit()


def process_submission(submission_id: int) -> list[int]:
    """Turn a submission into an image and a queued job; return the job ids to enqueue.

    Safe to run twice: a submission that already has images is left as it is.
    """
    submission = db.session.get(Submission, submission_id)
    if submission is None or submission.user_images:
        return []
    submission.processing_started = utcnow()
    db.session.commit()
    config = current_app.config
    if submission.upload_hash is None:
        try:
            sha1, name = _download(
                submission.url or "", config["MAX_CONTENT_LENGTH"], config["DOWNLOAD_TIMEOUT"]
            )
        except (requests.RequestException, UploadTooLarge, TimeoutError, OSError) as exc:
            _fail_submission(submission, f"Failed to download {submission.url}: {exc}", None)
            return []
        submission.upload_hash = sha1
        submission.original_filename = name or submission.original_filename
    params = SolveParams.from_row(submission)
    work_dir = storage().make_work_dir(f"sub-{submission.id}-")
    try:
        prepared = prepare_input(
            storage().upload_path(submission.upload_hash),
            work_dir,
            max_pixels=config["MAX_IMAGE_PIXELS"],
            max_uncompressed_bytes=config["MAX_CONTENT_LENGTH"],
            image_width=params.image_width,
            image_height=params.image_height,
        )
    except UnsupportedInput as exc:
        _fail_submission(submission, str(exc), submission.upload_hash)
        return []
    finally:
        storage().discard(work_dir)
    image = UserImage(
        submission=submission,
        user_id=submission.user_id,
        file_hash=submission.upload_hash,
        kind=prepared.kind,
        width=prepared.width,
        height=prepared.height,
        fits_extension=prepared.fits_extension,
        original_filename=submission.original_filename,
        publicly_visible=submission.publicly_visible,
    )
    job = Job(user_image=image)
    db.session.add_all([image, job])
    if submission.album_id is not None:
        album = db.session.get(Album, submission.album_id)
        if album is not None:
            album.images.append(image)
    submission.processing_finished = utcnow()
    db.session.commit()
    return [job.id]


def claim_job(job_id: int) -> bool:
    """Move a queued job to solving; False if another delivery already took it."""
    result = db.session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.SOLVING, stage="starting", started_at=utcnow())
    )
    db.session.commit()
    return result.rowcount == 1


def set_job_stage(job_id: int, stage: str) -> None:
    db.session.execute(update(Job).where(Job.id == job_id).values(stage=stage))
    db.session.commit()


def finish_job(
    job_id: int,
    *,
    numbers: CalibrationNumbers | None,
    wcs_header: str | None,
    failure_reason: str | None,
    sources: int | None,
    objects: Sequence[str] = (),
) -> None:
    """Record the end of a job: a calibration and the objects in the field on success,
    the reason on failure."""
    job = db.session.get(Job, job_id)
    assert job is not None
    job.finished_at = utcnow()
    job.sources_detected = sources
    if numbers is not None and wcs_header is not None:
        job.status = JobStatus.SUCCESS
        job.stage = "done"
        db.session.add(Calibration(job=job, wcs_header=wcs_header, **numbers.__dict__))
        image = job.user_image
        # A re-solve replaces what the machine said about the field before.
        for old in [t for t in image.tags if t.machine] + list(image.sky_objects):
            db.session.delete(old)
        for name in objects:
            db.session.add(ImageTag(user_image_id=image.id, text=name, machine=True))
            db.session.add(SkyObject(user_image_id=image.id, name=name))
    else:
        job.status = JobStatus.FAILURE
        job.stage = "failed"
        job.failure_reason = failure_reason or "The solve failed."
    db.session.commit()


def prepare_image(image: UserImage, work_dir: Path) -> PreparedInput:
    """Recognise a stored image again and prepare what the engine (or a renderer) reads."""
    assert image.file_hash is not None
    params = SolveParams.from_row(image.submission)
    return prepare_input(
        storage().upload_path(image.file_hash),
        work_dir,
        max_pixels=current_app.config["MAX_IMAGE_PIXELS"],
        max_uncompressed_bytes=current_app.config["MAX_CONTENT_LENGTH"],
        image_width=params.image_width,
        image_height=params.image_height,
    )


def requeue_pending() -> int:
    """Put unprocessed submissions and queued jobs back on the queue (duplicates are harmless)."""
    submissions = db.session.scalars(
        select(Submission.id).where(Submission.processing_finished.is_(None))
    ).all()
    jobs = db.session.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED)).all()
    for submission_id in submissions:
        queue.enqueue_submission(submission_id)
    for job_id in jobs:
        queue.enqueue_solve(job_id)
    return len(submissions) + len(jobs)


def can_view(item: UserImage | Submission, user: User | None) -> bool:
    """Public images and submissions are visible to all; private ones only to their owner."""
    if item.publicly_visible == "y":
        return True
    return user is not None and item.user_id == user.id
