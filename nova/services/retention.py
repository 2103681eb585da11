"""Deleting images and submissions for good: rows, products, cached pictures and stored
uploads no other image uses. Used by the owner's "delete this image" and by retention
(`nova purge`, NOVA_RETENTION_DAYS), which removes old anonymous and failed uploads.

Rows go first, in one transaction; files go only after it commits. A crash between the two
leaves orphan files (harmless: no URL shows them), never rows whose files are gone.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import redis
from sqlalchemy import delete, exists, or_, select

from nova.db import models
from nova.db.models import Job, JobStatus, Submission, UserImage, utcnow
from nova.extensions import db
from nova.services import storage

log = logging.getLogger(__name__)
ENDED = (JobStatus.SUCCESS, JobStatus.FAILURE)
# A cancelled job's horse stops within about a second; a delete waits at most this long.
CANCEL_WAIT_SECONDS = 10.0


class StillRunning(Exception):
    """The image has a job that is queued or solving: it can be deleted once it has ended."""


@dataclass
class Removal:
    """What a deletion removed (files are counted once removed from disk)."""

    submissions: int = 0
    images: int = 0
    jobs: int = 0
    files: int = 0
    _paths: list[Path] = field(default_factory=list)


def _forget_image(image: UserImage, removal: Removal) -> None:
    """Delete an image's rows (jobs, calibrations, tags, comments, ...); queue its files."""
    store = storage()
    job_ids = [job.id for job in image.jobs]
    if job_ids:
        db.session.execute(delete(models.Calibration).where(models.Calibration.job_id.in_(job_ids)))
        db.session.execute(
            delete(models.WebhookDelivery).where(models.WebhookDelivery.job_id.in_(job_ids))
        )
        db.session.execute(delete(Job).where(Job.id.in_(job_ids)))
    for model in (models.ImageTag, models.SkyObject, models.Comment):
        db.session.execute(delete(model).where(model.user_image_id == image.id))
    db.session.execute(
        delete(models.album_images).where(models.album_images.c.user_image_id == image.id)
    )
    removal._paths.extend(store.job_dir(job_id) for job_id in job_ids)
    removal._paths.extend(store.cache.glob(f"image-{image.id}-*"))
    removal.jobs += len(job_ids)
    removal.images += 1
    # The rows above went by statement: reload the relationships (now empty) before the ORM
    # deletes the image, or it would try to unlink children that no longer exist.
    db.session.flush()
    db.session.expire(image)
    db.session.delete(image)


def _unused_uploads(hashes: set[str]) -> list[Path]:
    """Stored uploads among ``hashes`` that no remaining image or submission refers to."""
    paths = []
    for sha1 in hashes:
        in_use = db.session.scalar(
            select(
                exists().where(UserImage.file_hash == sha1)
                | exists().where(Submission.upload_hash == sha1)
            )
        )
        if not in_use:
            paths.append(storage().upload_path(sha1))
    return paths


def _remove_files(removal: Removal) -> None:
    for path in removal._paths:
        try:
            if path.is_dir():
                shutil.rmtree(path)
                removal.files += 1
            elif path.exists():
                path.unlink()
                removal.files += 1
        except OSError as exc:  # the rows are gone already: an orphan file, never shown
            log.warning("could not remove %s: %s", path, exc)
    removal._paths.clear()


def _check_ended(images: list[UserImage]) -> None:
    for image in images:
        if any(job.status not in ENDED for job in image.jobs):
            raise StillRunning(
                f"Image {image.id} is still being solved; delete it once its job has ended."
            )


def delete_image(image: UserImage) -> Removal:
    """Delete one image and everything derived from it; its submission too when it was the
    submission's last image. Commits."""
    _check_ended([image])
    removal = Removal()
    submission = image.submission
    hashes = {h for h in (image.file_hash, submission.upload_hash) if h}
    image_id = image.id
    _forget_image(image, removal)
    db.session.flush()
    if not db.session.scalar(select(exists().where(UserImage.submission_id == submission.id))):
        db.session.expire(submission)
        db.session.delete(submission)
        removal.submissions += 1
    db.session.flush()
    removal._paths.extend(_unused_uploads(hashes))
    db.session.commit()
    _remove_files(removal)
    log.info("deleted image %s (%d jobs, %d files)", image_id, removal.jobs, removal.files)
    return removal


def delete_submission(submission: Submission, removal: Removal) -> None:
    """Delete a submission and all its images (no commit: the caller batches)."""
    hashes = {h for h in [submission.upload_hash, *(i.file_hash for i in submission.user_images)]}
    for image in list(submission.user_images):
        _forget_image(image, removal)
    db.session.flush()
    db.session.expire(submission)
    db.session.delete(submission)
    db.session.flush()
    removal.submissions += 1
    removal._paths.extend(_unused_uploads({h for h in hashes if h}))


def delete_submission_now(submission: Submission) -> Removal:
    """The owner's delete: cancel the submission's unfinished jobs (their horses kill the
    engine), wait until no worker runs them any more (so none publishes a job directory
    after its files are gone), then delete everything as retention does. Commits."""
    from nova.infra import jobqueue
    from nova.services import jobs  # jobs builds on this module's neighbours

    unfinished = [job for image in submission.user_images for job in image.jobs]
    unfinished = [job for job in unfinished if job.status not in ENDED]
    for job in unfinished:
        jobs.cancel_job(job)
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    for job in unfinished:
        while time.monotonic() < deadline:
            try:
                if not jobqueue.solve_running(job.id):
                    break
            except redis.exceptions.RedisError:
                break  # no queue to ask: the row has ended, a late horse records nothing
            time.sleep(0.1)
    removal = Removal()
    submission_id = submission.id
    delete_submission(submission, removal)
    db.session.commit()
    _remove_files(removal)
    log.info(
        "deleted submission %s (%d images, %d jobs, %d files)",
        submission_id,
        removal.images,
        removal.jobs,
        removal.files,
    )
    return removal


def purge_candidates(days: int) -> list[Submission]:
    """Submissions older than ``days`` that were anonymous or failed, and are not running.

    Failed: processing found nothing to solve (an error and no image), or no job of it
    succeeded. A signed-in user's solved images are kept whatever their age.
    """
    cutoff = utcnow() - timedelta(days=days)
    solved = (
        select(UserImage.submission_id)
        .join(Job, Job.user_image_id == UserImage.id)
        .where(Job.status == JobStatus.SUCCESS)
    )
    running = (
        select(UserImage.submission_id)
        .join(Job, Job.user_image_id == UserImage.id)
        .where(Job.status.not_in(ENDED))
    )
    query = (
        select(Submission)
        .where(
            Submission.created_at < cutoff,
            Submission.processing_finished.is_not(None),
            Submission.id.not_in(running),
            or_(Submission.user_id.is_(None), Submission.id.not_in(solved)),
        )
        .order_by(Submission.created_at)
    )
    return list(db.session.scalars(query))


def purge(days: int, batch: int = 100) -> Removal:
    """Delete old anonymous and failed submissions with their images and files. Commits in
    batches, so a long purge never holds one huge transaction."""
    removal = Removal()
    candidates = purge_candidates(days)
    for start in range(0, len(candidates), batch):
        for submission in candidates[start : start + batch]:
            delete_submission(submission, removal)
        db.session.commit()
        _remove_files(removal)
    log.info(
        "purge (older than %d days): %d submissions, %d images, %d jobs, %d files removed",
        days,
        removal.submissions,
        removal.images,
        removal.jobs,
        removal.files,
    )
    return removal
