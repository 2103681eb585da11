"""The life of a solve job's row: claimed, staged, finished, cancelled; its heartbeat and log."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError

from nova import logs
from nova.db.models import Calibration, ImageTag, Job, JobStatus, SkyObject, Submission, utcnow
from nova.engine.calibration import CalibrationNumbers
from nova.engine.job_files import LOG_NAME
from nova.engine.redaction import without_server_paths
from nova.extensions import db
from nova.infra import jobqueue, metrics
from nova.services import events, queue_progress, queueing, storage, webhooks

log = logging.getLogger(__name__)


def claim_job(job_id: int) -> bool:
    """Move a queued job to solving; False if another delivery already took it."""
    result = db.session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.SOLVING,
            stage="starting",
            started_at=utcnow(),
            heartbeat_at=utcnow(),
            attempts=Job.attempts + 1,
        )
    )
    db.session.commit()
    if result.rowcount != 1:
        return False
    events.job_changed(job_id)
    return True


def set_job_stage(job_id: int, stage: str) -> None:
    db.session.execute(update(Job).where(Job.id == job_id).values(stage=stage))
    db.session.commit()
    events.job_changed(job_id)


def finish_job(
    job_id: int,
    *,
    numbers: CalibrationNumbers | None,
    wcs_header: str | None,
    failure_reason: str | None,
    sources: int | None,
    objects: Sequence[str] = (),
    hints: dict[str, Any] | None = None,
    stage_seconds: Mapping[str, float] | None = None,
    quality: dict[str, Any] | None = None,
) -> None:
    """Record the end of a job: a calibration, its quality and the objects in the field on
    success, the reason on failure; where its hints came from either way. A job that ended
    already (cancelled by its owner while solving) keeps its end. ``stage_seconds``: the
    time spent in each stage, for the metrics."""
    job = db.session.get(Job, job_id)
    if job is None or job.is_finished:
        log.info("job %s ended already (cancelled or deleted); result not recorded", job_id)
        db.session.rollback()
        return
    job.finished_at = utcnow()
    job.sources_detected = sources
    job.hints = hints
    if numbers is not None and wcs_header is not None:
        job.status = JobStatus.SUCCESS
        job.stage = "done"
        job.quality = quality
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
    if job.started_at is not None:
        # The estimates (nova.services.queue_progress) come from recent durations per queue.
        queue_progress.record_duration(
            queueing.solve_queue_for(job_id),
            (job.finished_at - job.started_at).total_seconds(),
        )
    job_ended(job_id, stage_seconds=stage_seconds)
    with logs.bind(job_id=job_id, submission_id=job.user_image.submission_id):
        log.info(
            "job %s ended: %s%s (attempt %s, %s sources)",
            job_id,
            job.status,
            f", {job.failure_reason}" if job.status == JobStatus.FAILURE else "",
            job.attempts,
            sources,
        )


def job_ended(
    job_id: int, *, stage_seconds: Mapping[str, float] | None = None, ran: bool = True
) -> None:
    """After the commit that ended a job: count it in the metrics, tell its watchers, queue
    its webhook. Every end of a job (solved, failed, given up, cancelled) comes through here.
    ``ran=False``: no worker ran it (answered at once, or given up), so it has no timings."""
    job = db.session.get(Job, job_id)
    if job is not None:
        timings = (
            {
                "queued_at": job.queued_at,
                "started_at": job.started_at,
                "finished_at": job.finished_at,
            }
            if ran
            else {}
        )
        metrics.job_ended(job.status, stage_seconds=stage_seconds, **timings)
    events.job_changed(job_id)
    webhooks.job_ended(job_id)


def announce_ended(submission: Submission) -> None:
    """``job_ended`` for the jobs a submission was born with, already ended (a refused
    upload's failed job, an answer reused from an earlier solve)."""
    for image in submission.user_images:
        for job in image.jobs:
            job_ended(job.id, ran=False)
    events.submission_changed(submission.id)


def fail_job_while(job_id: int, states: Sequence[str], reason: str) -> int:
    """End the job as a failure with ``reason`` if it is still in one of ``states``, in one
    UPDATE, so that a worker or the owner ending it meanwhile is never overwritten. Returns
    how many rows changed (0 or 1); the caller commits."""
    return db.session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(states))
        .values(
            status=JobStatus.FAILURE,
            stage="failed",
            finished_at=utcnow(),
            failure_reason=reason,
        )
    ).rowcount


def cancel_job(job: Job) -> bool:
    """End a queued or solving job as cancelled by its owner, and stop its solve
    (jobqueue.cancel_solve). False when it had ended already (nothing to cancel)."""
    from nova.infra.cancellation import CANCEL_REASON

    changed = fail_job_while(job.id, (JobStatus.QUEUED, JobStatus.SOLVING), CANCEL_REASON)
    db.session.commit()
    db.session.refresh(job)
    if not changed:
        return False
    try:
        jobqueue.cancel_solve(job.id)
    except redis.exceptions.RedisError as exc:
        # The row has ended: a worker that takes the entry finds it so and does nothing.
        log.warning("could not tell the queue to stop job %s: %s", job.id, exc)
    with logs.bind(job_id=job.id, submission_id=job.user_image.submission_id):
        log.info("job %s ended: %s", job.id, CANCEL_REASON)
    job_ended(job.id)
    return True


def job_log_text(job_id: int, max_chars: int | None = None) -> str | None:
    """A job's log as users see it: the last ``max_chars`` of it, without server paths (the
    engine's log names its work directory, index files and programs); None without a log."""
    path = storage().job_file(job_id, LOG_NAME)
    if path is None:
        return None
    with path.open("rb") as handle:
        if max_chars is not None:
            handle.seek(max(0, path.stat().st_size - max_chars))
        text = handle.read().decode("utf-8", "replace")
    return without_server_paths(text)


def heartbeat(job_id: int) -> None:
    """Say that the worker solving this job is alive (called from a thread: own connection)."""
    with db.engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))


def unfinished_job_counts() -> dict[str, int] | None:
    """Jobs not yet ended, by status (queued, solving), for /metrics; None when the database
    does not answer (logged). Read only."""
    try:
        counts = dict(
            db.session.execute(
                select(Job.status, func.count(Job.id))
                .where(Job.status.in_((JobStatus.QUEUED, JobStatus.SOLVING)))
                .group_by(Job.status)
            ).all()
        )
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.warning("metrics: the database did not answer: %s", exc)
        return None
    return {str(status): counts.get(status, 0) for status in (JobStatus.QUEUED, JobStatus.SOLVING)}
