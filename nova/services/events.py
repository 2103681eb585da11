"""Live events: the progress of a job or submission as numbered events, and the redis
pub/sub signal that one changed.

Whoever changes a job's state (nova.services.jobs and its neighbours, after their commit)
calls ``job_changed``; the
message on the job's and its submission's channels carries no state, only "look again":
a stream (nova.web.events) then reads the state once from the database. Events are
numbered from the state itself (``job_progress``), never from a counter, so a client that
comes back with Last-Event-ID is sent the state it has not seen yet, and nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from sqlalchemy import select

from nova.db.models import Job, JobStatus, Submission, UserImage
from nova.extensions import db
from nova.infra import jobqueue

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "nova:events"
# The stages a job passes through while solving, in order; "starting" (a worker took it,
# nothing has run yet) still counts as waiting.
STAGE_RANK = {"queued": 0, "starting": 0, "extracting": 1, "solving": 2}
RANK_EVENT = {0: "queued", 1: "extracting", 2: "solving"}
FINAL_RANK = 3
RANKS_PER_ATTEMPT = FINAL_RANK + 1


@dataclass(frozen=True)
class Progress:
    """Where a job or submission is: the event's number, its name, whether it is the last."""

    number: int
    event: str
    final: bool


def job_channel(job_id: int) -> str:
    return f"{CHANNEL_PREFIX}:job:{job_id}"


def submission_channel(submission_id: int) -> str:
    return f"{CHANNEL_PREFIX}:submission:{submission_id}"


def job_progress(job: Job) -> Progress:
    """The job's event: queued, extracting, solving, then success or failure.

    Numbered so that every step forward has a higher number, a retry too (the reconciler
    puts a job whose worker died back to "queued": its number counts the attempts made).
    """
    if job.is_finished:
        attempt = max(job.attempts, 1) - 1
        return Progress(attempt * RANKS_PER_ATTEMPT + FINAL_RANK, str(job.status), True)
    if job.status == JobStatus.QUEUED:
        return Progress(job.attempts * RANKS_PER_ATTEMPT, "queued", False)
    # Solving: a stage this module does not know (none yet) counts as solving.
    rank = STAGE_RANK.get(job.stage, 2)
    attempt = max(job.attempts, 1) - 1
    return Progress(attempt * RANKS_PER_ATTEMPT + rank, RANK_EVENT[rank], False)


def submission_progress(submission: Submission) -> Progress:
    """The submission's event: "queued" until a job of it runs, then the furthest stage of
    its running jobs; at the end "success" when every job solved, "failure" otherwise.

    Its number grows with every step of any of its jobs (the sum of theirs) and with the
    upload being read, so each change is one event."""
    jobs = [job for image in submission.user_images for job in image.jobs]
    progress = [job_progress(job) for job in jobs]
    number = (submission.processing_started is not None) + 2 * (
        submission.processing_finished is not None
    )
    number += sum(item.number + 1 for item in progress)
    finished = submission.processing_finished is not None and all(p.final for p in progress)
    if finished:
        solved = bool(jobs) and all(job.status == JobStatus.SUCCESS for job in jobs)
        return Progress(number, "success" if solved else "failure", True)
    running = [p for p in progress if not p.final]
    furthest = max((p.number % RANKS_PER_ATTEMPT for p in running), default=0)
    return Progress(number, RANK_EVENT[furthest], False)


def _publish(channels: list[str]) -> None:
    """Send "look again" on ``channels``; a redis that is away only delays the streams
    (they look again at their next keep-alive), it never fails the state change."""
    try:
        connection = jobqueue.redis_connection()
        for channel in channels:
            connection.publish(channel, b"changed")
    except redis.exceptions.RedisError as exc:
        log.warning("could not publish a state change on %s: %s", channels, exc)


def job_changed(job_id: int) -> None:
    """Tell the watchers of the job and of its submission that the job's state changed."""
    submission_id = db.session.scalar(
        select(UserImage.submission_id)
        .join(Job, Job.user_image_id == UserImage.id)
        .where(Job.id == job_id)
    )
    channels = [job_channel(job_id)]
    if submission_id is not None:
        channels.append(submission_channel(submission_id))
    _publish(channels)


def submission_changed(submission_id: int) -> None:
    """Tell the watchers of a submission that it changed (read, failed, answered at once)."""
    _publish([submission_channel(submission_id)])
