"""The reconciler: jobs whose worker died are retried or failed, lost queue entries are
queued again, and stale temporary files are swept."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import select, update

from nova.db.models import Job, JobStatus, Submission, utcnow
from nova.extensions import db, settings
from nova.infra import jobqueue
from nova.services import events, queueing, storage
from nova.services.intake import fail_submission
from nova.services.jobs import fail_job_while, job_ended

log = logging.getLogger(__name__)


def reconcile(max_attempts: int, heartbeat_seconds: int) -> dict[str, int]:
    """Find work the queue lost and put it back; give up on jobs that keep killing workers.

    - a job "solving" whose worker stopped sending heartbeats (killed, crashed, machine
      rebooted) goes back to "queued" and is enqueued again, at most
      ``max_attempts`` times in all, then ends as a failure with the reason;
    - queued jobs and unprocessed submissions missing from the queue are enqueued again.
    Safe to run from several workers at once: every change is a conditional update.
    """
    counts = {"retried": 0, "failed": 0, "requeued": 0, "swept": 0}
    _retry_lost_solves(counts, max_attempts, heartbeat_seconds)
    _requeue_lost_work(counts, max_attempts)
    from nova.services import batches  # batches builds on this module

    counts["requeued"] += batches.reconcile()
    counts["swept"] = sweep_tmp(_longest_work_seconds())
    return counts


def _retry_lost_solves(counts: dict[str, int], max_attempts: int, heartbeat_seconds: int) -> None:
    """Solving jobs whose worker is gone: queued again, or failed after ``max_attempts``."""
    # A solving worker refreshes its heartbeat every heartbeat_seconds; three missed beats
    # (and some slack for a busy database) mean it is gone.
    lost_before = utcnow() - timedelta(seconds=3 * heartbeat_seconds + 10)
    for job in db.session.scalars(select(Job).where(Job.status == JobStatus.SOLVING)).all():
        heartbeat = job.heartbeat_at or job.started_at or job.queued_at
        if heartbeat > lost_before:
            continue  # its worker is alive (or only just started)
        retry = job.attempts < max_attempts
        if not retry:
            reason = (
                f"The worker stopped (killed or crashed) while solving, {job.attempts} "
                "times; giving up."
            )
            changed = fail_job_while(job.id, (JobStatus.SOLVING,), reason)
            counts["failed"] += changed
        else:
            changed = db.session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == JobStatus.SOLVING)
                .values(status=JobStatus.QUEUED, stage="queued")
            ).rowcount
            counts["retried"] += changed
        db.session.commit()
        if changed and retry:
            events.job_changed(job.id)
            queueing.enqueue_solve(job.id)
        elif changed:
            job_ended(job.id, ran=False)  # given up: its worker's timings died with it


def _requeue_lost_work(counts: dict[str, int], max_attempts: int) -> None:
    """Queued jobs and unprocessed submissions missing from the queue: enqueued again (a
    submission that keeps killing its worker fails instead)."""
    from nova.services import batches  # batches builds on this module

    # Frames of a batch are its tasks' work (batches.reconcile), never queued one by one.
    queued = select(Job.id).where(
        Job.status == JobStatus.QUEUED, Job.id.not_in(batches.frame_job_ids())
    )
    for job_id in db.session.scalars(queued).all():
        if not queueing.solve_waiting_or_running(job_id):
            counts["requeued"] += queueing.enqueue_solve(job_id)
    unprocessed = select(Submission).where(
        Submission.processing_finished.is_(None),
        Submission.id.not_in(batches.frame_submission_ids()),
    )
    for submission in db.session.scalars(unprocessed).all():
        if jobqueue.is_waiting_or_running(jobqueue.submission_entry_id(submission.id)):
            continue
        if submission.attempts >= max_attempts and not submission.user_images:
            fail_submission(
                submission,
                f"The worker stopped (killed or crashed) while reading this upload, "
                f"{submission.attempts} times; giving up.",
                submission.upload_hash,
            )
            counts["failed"] += 1
            continue
        counts["requeued"] += jobqueue.enqueue_submission(submission.id)


def _longest_work_seconds() -> float:
    """The longest any task may run (its RQ timeout): older work directories are orphans."""
    config = settings()
    return max(config.solve_time_limit + 120, 2 * config.download_timeout + 120)


# Slack on top of the longest task before a work directory counts as abandoned.
_SWEEP_MARGIN_SECONDS = 600


def sweep_tmp(longest_work_seconds: float) -> int:
    """Delete what killed work left in tmp/ (a work horse killed mid-solve cannot clean up):
    entries untouched for longer than any task may run. Returns how many went."""
    cutoff = time.time() - longest_work_seconds - _SWEEP_MARGIN_SECONDS
    swept = 0
    for entry in storage().tmp.iterdir():
        try:
            if entry.lstat().st_mtime >= cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                storage().discard(entry)
            else:
                entry.unlink(missing_ok=True)
        except OSError as exc:  # removed meanwhile by its owner, or not ours to remove
            log.warning("could not sweep %s: %s", entry.name, exc)
            continue
        swept += 1
    return swept
