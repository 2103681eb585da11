"""Result reuse: an image already solved with the same parameters gets the earlier solution."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import select

from nova.db import models
from nova.db.models import ImageTag, Job, JobStatus, SkyObject, Submission, UserImage, utcnow
from nova.engine.job_files import (
    ANNOTATIONS_NAME,
    AXY_NAME,
    CORR_NAME,
    LOG_NAME,
    RDLS_NAME,
    WCS_NAME,
)
from nova.engine.params import SolveParams
from nova.extensions import db
from nova.services import storage
from nova.services.jobs import announce_ended

log = logging.getLogger(__name__)


# What an answer from an earlier solve takes of it: the engine's own products. Never its
# log (it names the other job's directory and id) nor pictures and files drawn for it (the
# KMZ carries the other upload's file name); those are built again for the copy.
REUSED_PRODUCTS = (AXY_NAME, WCS_NAME, CORR_NAME, RDLS_NAME, ANNOTATIONS_NAME)
# What the copy's image takes of the earlier one: what it says of the file itself (the same
# bytes); whose it is, its name and its visibility come from the new submission.
SAME_FILE_COLUMNS = ("file_hash", "kind", "width", "height", "fits_extension")


def _earlier_solve(submission: Submission) -> Job | None:
    """The newest successful solve of the same file with the same parameters that this
    submission's uploader may see (their own, or public)."""
    params = SolveParams.from_row(submission)
    same_params = [
        getattr(Submission, name).is_(None) if value is None else getattr(Submission, name) == value
        for name, value in params.as_dict().items()
    ]
    reusable = UserImage.publicly_visible == "y"
    if submission.user_id is not None:
        reusable = reusable | (UserImage.user_id == submission.user_id)
    return db.session.scalars(
        select(Job)
        .join(UserImage, Job.user_image_id == UserImage.id)
        .join(Submission, UserImage.submission_id == Submission.id)
        .where(
            UserImage.file_hash == submission.upload_hash,
            Job.status == JobStatus.SUCCESS,
            UserImage.kind != "unsupported",
            reusable,
            *same_params,
        )
        .order_by(Job.finished_at.desc())  # the newest solve (ids are random)
        .limit(1)
    ).first()


def _publish_products(source_dir: Path, job_id: int) -> None:
    """The copy's job directory: the earlier solve's engine products and a log saying so."""
    work_dir = storage().make_work_dir(f"reuse-{job_id}-")
    for name in REUSED_PRODUCTS:
        product = source_dir / name
        if product.is_file():
            os.link(product, work_dir / name)  # products never change: share them
    (work_dir / LOG_NAME).write_text(
        "Answered at once from an earlier solve of the same file with the same parameters; "
        "no engine ran for this job.\n"
    )
    storage().publish_job_dir(work_dir, job_id)


def reuse_solution(submission: Submission) -> bool:
    """Answer an upload at once from an earlier solve of the same file with the same
    parameters: a new image and a job that is already a success, with the same calibration
    and engine products. Only the uploader's own solves and public ones are reused: a
    private solve of someone else is neither copied nor revealed by an instant answer.
    Returns False when there is nothing to reuse (the upload is queued)."""
    earlier = _earlier_solve(submission)
    if earlier is None or earlier.calibration is None:
        return False
    source_dir = storage().job_dir(earlier.id)
    if not (source_dir / "wcs.fits").exists():
        return False
    old_image = earlier.user_image
    now = utcnow()
    image = UserImage(
        submission=submission,
        user_id=submission.user_id,
        original_filename=submission.original_filename,
        publicly_visible=submission.publicly_visible,
        **{name: getattr(old_image, name) for name in SAME_FILE_COLUMNS},
    )
    job = Job(
        user_image=image,
        status=JobStatus.SUCCESS,
        stage="done",
        queued_at=now,
        started_at=now,
        finished_at=now,
        sources_detected=earlier.sources_detected,
        hints=earlier.hints,
    )
    submission.processing_started = submission.processing_finished = now
    db.session.add_all([image, job])
    db.session.flush()  # ids for the copies below
    calibration = earlier.calibration
    db.session.add(
        models.Calibration(
            job=job,
            **{
                column.name: getattr(calibration, column.name)
                for column in models.Calibration.__table__.columns
                if column.name not in ("id", "job_id")
            },
        )
    )
    for tag in old_image.tags:
        if tag.machine:
            db.session.add(ImageTag(user_image_id=image.id, text=tag.text, machine=True))
    for obj in old_image.sky_objects:
        db.session.add(SkyObject(user_image_id=image.id, name=obj.name))
    _publish_products(source_dir, job.id)
    db.session.commit()
    announce_ended(submission)
    return True
