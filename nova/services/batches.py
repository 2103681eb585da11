"""Time series: many frames of one field sent in one request, solved as a chain.

A batch is an ordered list of frames; every frame is an ordinary submission (and, once
recognised, an image and a job), so every per-job endpoint and page works for it. What a
batch adds: one request for all frames, a handful of worker tasks instead of two queue hops
per frame, and hints taken from the frames already solved (``batch_solver``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from nova.db.batch_models import Batch, BatchFrame
from nova.db.models import ImageTag, Job, JobStatus, SkyObject, Submission, User, UserImage, utcnow
from nova.engine import job_files, solver
from nova.engine.calibration import nova_calibration
from nova.extensions import db, settings
from nova.infra import jobqueue
from nova.render import products
from nova.services import access, reuse, storage, submissions

log = logging.getLogger(__name__)


class BatchRefused(ValueError):
    """The batch as a whole cannot be taken (too many frames, none); the message says why."""


def check_frame_count(count: int) -> None:
    limit = settings().batch_max_frames
    if count == 0:
        raise BatchRefused('no files: send each frame as a part named "file"')
    if count > limit:
        raise BatchRefused(
            f"too many frames: {count}; a batch takes at most {limit} (NOVA_BATCH_MAX_FRAMES)"
        )


def create_batch(
    files: Sequence[tuple[Path, str]], options: submissions.SubmissionOptions, *, chain: bool
) -> tuple[Batch, list[Submission]]:
    """Store every frame (path, client file name) as a submission of one new batch, commit,
    then queue the batch's tasks. Frames that are not solvable fail alone, on the worker."""
    check_frame_count(len(files))
    store = storage()
    batch = Batch(
        user_id=options.user.id if options.user else None,
        publicly_visible="y" if options.user is None else options.publicly_visible,
        chain=chain,
    )
    db.session.add(batch)
    frames = []
    for position, (path, filename) in enumerate(files):
        sha1 = store.store_file(path)
        submission = submissions.new_submission(
            options, upload_hash=sha1, original_filename=submissions.basename(filename)
        )
        frames.append(submission)
        db.session.add(submission)
        db.session.add(BatchFrame(batch=batch, position=position, submission=submission))
    db.session.commit()
    log.info(
        "batch %s received: %d frames from %s",
        batch.id,
        len(files),
        f"user {batch.user_id}" if batch.user_id else "an anonymous client",
    )
    if settings().reuse_results:
        for submission in frames:
            reuse.reuse_solution(submission)
    enqueue_tasks(batch.id, len(files))
    return batch, frames


# A task takes frames one by one until none is left; a few run side by side (one per worker,
# or two when no worker is registered yet) so that every core helps.
FRAMES_PER_EXTRA_TASK = 10


def enqueue_tasks(batch_id: int, frames: int) -> None:
    try:
        workers = jobqueue.worker_count()
    except Exception:  # redis down: the reconciler queues the batch when it is back
        workers = 0
    tasks = max(1, min(max(2, workers), -(-frames // FRAMES_PER_EXTRA_TASK)))
    for number in range(tasks):
        jobqueue.enqueue_batch(batch_id, number)


# -- what the API and the pages show -------------------------------------------------------


@dataclass(frozen=True)
class FrameState:
    position: int
    submission: Submission
    image: UserImage | None
    job: Job | None

    @property
    def status(self) -> str:
        if self.job is None:
            if self.submission.error_message:
                return JobStatus.FAILURE
            return JobStatus.QUEUED
        return str(self.job.status)

    @property
    def filename(self) -> str:
        name = self.image.original_filename if self.image else ""
        return name or self.submission.original_filename or f"frame-{self.position + 1}"


def frame_states(batch: Batch) -> list[FrameState]:
    """Every frame in part order with its image and (best) job, loaded in a few queries."""
    frames = db.session.scalars(
        select(BatchFrame)
        .where(BatchFrame.batch_id == batch.id)
        .order_by(BatchFrame.position)
        .options(
            selectinload(BatchFrame.submission)
            .selectinload(Submission.user_images)
            .selectinload(UserImage.jobs)
            .selectinload(Job.calibration)
        )
    ).all()
    states = []
    for frame in frames:
        if frame.submission is None:
            # Deleted (owner, retention): PostgreSQL drops the frame with it, SQLite (no
            # foreign keys enforced) keeps the row.
            continue
        images = frame.submission.user_images
        image = images[0] if images else None
        states.append(
            FrameState(frame.position, frame.submission, image, image.best_job if image else None)
        )
    return states


def calibration_values(job: Job | None) -> dict[str, float] | None:
    """nova's calibration fields (as /api/jobs/N/calibration) of a solved job, else None."""
    if job is None or job.calibration is None:
        return None
    return nova_calibration(job.calibration)


def batch_state(batch: Batch) -> dict[str, Any]:
    frames = []
    solved = failed = 0
    for state in frame_states(batch):
        status = state.status
        solved += status == JobStatus.SUCCESS
        failed += status == JobStatus.FAILURE
        reason = None
        if status == JobStatus.FAILURE:
            reason = (state.job.failure_reason if state.job else None) or (
                state.submission.error_message
            )
        frames.append(
            {
                "subid": state.submission.id,
                "job": state.job.id if state.job else None,
                "file": state.filename,
                "status": status,
                "calibration": calibration_values(state.job),
                "failure_reason": reason,
            }
        )
    total = len(frames)
    return {
        "status": "done" if solved + failed == total else "solving",
        "total": total,
        "solved": solved,
        "failed": failed,
        "frames": frames,
    }


def visible_batch(batch_id: int, user: User | None) -> Batch | None:
    """The batch when ``user`` may see it: public, or its owner's. Unlike a frame's own
    submission and job ids (nova.services.access), a batch id alone opens nothing private."""
    batch = db.session.get(Batch, batch_id)
    if batch is None or not access.can_view(batch, user):
        return None
    return batch


def unique_names(states: Sequence[FrameState]) -> dict[int, str]:
    """A file name per frame position for a zip: the frame's own, made unique if repeated."""
    names: dict[int, str] = {}
    seen: set[str] = set()
    for state in states:
        stem = Path(state.filename).stem or f"frame-{state.position + 1}"
        name, number = f"{stem}.wcs", 1
        while name in seen:
            number += 1
            name = f"{stem}-{number}.wcs"
        seen.add(name)
        names[state.position] = name
    return names


def wcs_zip(batch: Batch) -> bytes:
    """Every solved frame's WCS header (wcs.fits), named after its file."""
    states = [s for s in frame_states(batch) if s.job is not None and s.job.calibration]
    names = unique_names(states)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for state in states:
            assert state.job is not None
            path = storage().job_file(state.job.id, job_files.WCS_NAME)
            if path is not None:
                archive.write(path, names[state.position])
    return buffer.getvalue()


CSV_COLUMNS = ("file", "job", "ra", "dec", "orientation", "pixscale", "radius", "parity")


def calibrations_csv(batch: Batch) -> str:
    """One row per frame in part order; the numbers are empty for frames that did not solve."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for state in frame_states(batch):
        values = calibration_values(state.job) or {}
        writer.writerow(
            [state.filename, state.job.id if state.job else ""]
            + [repr(values[name]) if name in values else "" for name in CSV_COLUMNS[2:]]
        )
    return out.getvalue()


# -- objects in the field, on first request -------------------------------------------------


def ensure_objects_in_field(job: Job) -> None:
    """List the objects in a solved field (tags, annotations) if the solve skipped it.

    Frames of a batch are solved without it (it costs more than the hinted solve itself);
    the first request that shows them makes them, once (build_once's lock), so every
    product of an ordinary job exists for a frame too.
    """
    if job.status != JobStatus.SUCCESS:
        return
    job_dir = storage().job_dir(job.id)
    if (
        not (job_dir / job_files.WCS_NAME).exists()
        or (job_dir / job_files.ANNOTATIONS_NAME).exists()
    ):
        return
    store = storage()

    def build(target: Path) -> None:
        work_dir = store.make_work_dir(f"objects-{job.id}-")
        try:
            os.link(job_dir / job_files.WCS_NAME, work_dir / job_files.WCS_NAME)
            names = solver.objects_in_field(work_dir)
            os.replace(work_dir / job_files.ANNOTATIONS_NAME, target)
        finally:
            store.discard(work_dir)
        image = job.user_image
        if not image.sky_objects:
            for name in names:
                db.session.add(ImageTag(user_image_id=image.id, text=name, machine=True))
                db.session.add(SkyObject(user_image_id=image.id, name=name))
            db.session.commit()

    try:
        products.build_once(job_dir / job_files.ANNOTATIONS_NAME, build)
    except Exception as exc:  # a bonus: never fail the request that asked for something else
        db.session.rollback()
        log.warning("listing the objects in the field of job %s failed: %s", job.id, exc)


# -- recovery -------------------------------------------------------------------------------


def frame_submission_ids() -> Any:
    """Submissions that are batch frames: the reconciler leaves them to their batch's tasks."""
    return select(BatchFrame.submission_id)


def frame_job_ids() -> Any:
    return (
        select(Job.id)
        .join(UserImage, Job.user_image_id == UserImage.id)
        .join(BatchFrame, BatchFrame.submission_id == UserImage.submission_id)
    )


def reconcile() -> int:
    """Queue the tasks of batches with work left and no task alive; return how many.

    A frame whose recognition started but never finished (its task died) is released again
    once the time a task may spend on it has passed.
    """
    stale = utcnow() - timedelta(seconds=2 * settings().download_timeout + 120)
    db.session.execute(
        update(Submission)
        .where(
            Submission.id.in_(frame_submission_ids()),
            Submission.processing_finished.is_(None),
            Submission.processing_started < stale,
        )
        .values(processing_started=None)
    )
    db.session.commit()
    waiting = (
        select(BatchFrame.batch_id)
        .join(Submission, BatchFrame.submission_id == Submission.id)
        .outerjoin(UserImage, UserImage.submission_id == Submission.id)
        .outerjoin(Job, Job.user_image_id == UserImage.id)
        .where(Submission.processing_finished.is_(None) | (Job.status == JobStatus.QUEUED))
        .distinct()
    )
    queued = 0
    for batch_id in db.session.scalars(waiting).all():
        if not jobqueue.batch_task_alive(batch_id):
            queued += jobqueue.enqueue_batch(batch_id, 0)
    return queued
