"""Status answers: the one home of what ``/api/submissions/S``, ``/api/jobs/J`` and
``/api/jobs/J/info`` answer, built by functions any view (or an event stream) can call.

Clients poll these several times a second per job, so an answer's facts are kept in redis
and a poll reads them back without the ORM, in one round trip: the entries, their versions,
the global generation and the queue state the progress keys need (with a submission, its
jobs' entries too when this process has answered it before). Who may read them is decided on
every poll from those facts by nova.services.access (never cached: the id window closes with
time alone), and the caller's session is looked up only when a private row makes it matter.

The cache and its invalidation (SQLAlchemy session events, so no code path that changes state
can forget it) live in nova.services.status_cache. Unfinished jobs and submissions also get
``queue_position`` and ``eta_seconds`` (nova.services.queue_progress); both keys are absent
from a finished answer, which is then exactly nova's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import select

from nova.db.models import Calibration, Job, JobStatus, Submission, UserImage
from nova.engine.calibration import nova_calibration
from nova.extensions import db
from nova.infra import jobqueue
from nova.services import access, queueing, status_cache
from nova.services.queue_progress import (
    QueueReading,
    progress,
    queue_commands,
    queue_key,
    queue_reading,
)

log = logging.getLogger(__name__)

JOB_STATUS_BLURB = {
    JobStatus.QUEUED: "processing",
    JobStatus.SOLVING: "solving",
    JobStatus.SUCCESS: "success",
    JobStatus.FAILURE: "failure",
}
CallerId = Callable[[], int | None]
# Each process remembers the job ids of the submissions it answered, to read their entries
# in the submission's round trip at the next poll; cleared when it holds this many.
JOBS_SEEN_MAX = 4096
_JOBS_SEEN: dict[int, list[int]] = {}
# And the jobs it answered as ended (an end is final): no queue state is read for them,
# since an LPOS that finds nothing scans the whole queue.
ENDED_SEEN_MAX = 65536
_ENDED_SEEN: set[int] = set()


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


def _job_facts(job_id: int) -> dict[str, Any] | None:
    with db.engine.connect() as connection:
        row = connection.execute(
            select(Job.status, Job.stage, Job.started_at, Job.finished_at)
            .add_columns(UserImage.publicly_visible, UserImage.user_id, UserImage.submission_id)
            .add_columns(Calibration.id.label("calibration_id"))
            .join(UserImage, Job.user_image_id == UserImage.id)
            .outerjoin(Calibration, Calibration.job_id == Job.id)
            .where(Job.id == job_id)
        ).first()
    if row is None:
        return None
    finished = row.status in (JobStatus.SUCCESS, JobStatus.FAILURE)
    return {
        "id": job_id,
        "status": row.status,
        "stage": row.stage,
        "started_at": _time(row.started_at),
        "finished_at": _time(row.finished_at),
        "public": row.publicly_visible,
        "owner": row.user_id,
        "submission": row.submission_id,
        "calibration": row.calibration_id,
        # Which queue's durations estimate it (only asked while it can wait or run).
        "queue": None if finished else queueing.solve_queue_for(job_id),
    }


def _submission_facts(submission_id: int) -> dict[str, Any] | None:
    with db.engine.connect() as connection:
        row = connection.execute(
            select(
                Submission.publicly_visible,
                Submission.user_id,
                Submission.processing_started,
                Submission.processing_finished,
                Submission.error_message,
            ).where(Submission.id == submission_id)
        ).first()
        if row is None:
            return None
        image_ids = list(
            connection.scalars(
                select(UserImage.id)
                .where(UserImage.submission_id == submission_id)
                .order_by(UserImage.id)
            )
        )
        jobs: dict[int, list[int]] = {image_id: [] for image_id in image_ids}
        if image_ids:
            for job_id, image_id in connection.execute(
                select(Job.id, Job.user_image_id)
                .where(Job.user_image_id.in_(image_ids))
                .order_by(Job.queued_at, Job.id)  # as UserImage.jobs: oldest first
            ):
                jobs[image_id].append(job_id)
    return {
        "public": row.publicly_visible,
        "owner": row.user_id,
        "started": _time(row.processing_started),
        "finished": _time(row.processing_finished),
        "error_message": row.error_message,
        "images": [[image_id, jobs[image_id]] for image_id in image_ids],
    }


def _info_facts(job_id: int) -> dict[str, Any] | None:
    """What /info shows besides the status (tags, objects, calibration, hints): read with
    the ORM, only when its entry is missing or stale."""
    from nova.services import (
        batches,
        webhooks,  # build on services, which builds on this module
    )

    job = db.session.get(Job, job_id)
    if job is None:
        return None
    batches.ensure_objects_in_field(job)  # a batch frame's, listed on this first request
    image = job.user_image
    calibration = job.calibration
    return {
        "objects_in_field": [obj.name for obj in image.sky_objects],
        "machine_tags": [tag.text for tag in image.tags if tag.machine],
        "tags": [tag.text for tag in image.tags],
        "original_filename": image.original_filename,
        "calibration": nova_calibration(calibration, with_size=False) if calibration else None,
        "hints": job.hints,
        "quality": job.quality,
        "webhook_deliveries": (webhooks.deliveries(job) if image.submission.callback_url else None),
    }


# -- progress ---------------------------------------------------------------------------


def job_progress(job_id: int) -> dict[str, int | None]:
    """``progress`` of a job whose visibility the caller has checked (the status page)."""
    job = status_cache.cached("job", [job_id], _job_facts)[job_id]
    return progress(job) if job is not None else {}


def _submission_progress(
    facts: dict[str, Any],
    submission_id: int,
    jobs: list[dict[str, Any]],
    queues: QueueReading | None,
) -> dict[str, int | None]:
    """A submission's: its next job's position and the latest estimate of its jobs; before
    it has jobs, its place among the uploads waiting to be read (no estimate)."""
    unfinished = [
        job for job in jobs if job["status"] not in (JobStatus.SUCCESS, JobStatus.FAILURE)
    ]
    if facts["finished"] is None and not facts["images"]:
        try:
            at = status_cache.redis_connection().lpos(
                queue_key(jobqueue.SUBMISSIONS_QUEUE), jobqueue.submission_entry_id(submission_id)
            )
        except redis.exceptions.RedisError:
            at = None
        return {"queue_position": int(at) if at is not None else None, "eta_seconds": None}
    if not unfinished:
        return {}
    each = [progress(job, queues) for job in unfinished]
    positions = [p["queue_position"] for p in each if p["queue_position"] is not None]
    etas = [p["eta_seconds"] for p in each if p["eta_seconds"] is not None]
    return {
        "queue_position": min(positions) if positions else None,
        "eta_seconds": max(etas) if etas else None,
    }


# -- the answers ------------------------------------------------------------------------


def _read(
    keys: list[status_cache.Key], job_ids: list[int]
) -> tuple[status_cache.Reading | None, QueueReading | None]:
    """The entries of ``keys`` and the queue state of those ``job_ids`` not known to have
    ended, in one round trip."""
    waiting = [job_id for job_id in job_ids if job_id not in _ENDED_SEEN]
    if not waiting:
        return status_cache.read(keys), None
    reading = status_cache.read(keys, lambda pipe: queue_commands(pipe, waiting))
    return reading, (queue_reading(reading.extra, waiting) if reading is not None else None)


def _note_ended(jobs: Iterable[dict[str, Any] | None]) -> None:
    for job in jobs:
        if job is not None and job["status"] in (JobStatus.SUCCESS, JobStatus.FAILURE):
            if len(_ENDED_SEEN) >= ENDED_SEEN_MAX:
                _ENDED_SEEN.clear()
            _ENDED_SEEN.add(job["id"])


def _readable(job: dict[str, Any] | None, caller_id: CallerId) -> dict[str, Any] | None:
    """The job's facts when the caller may read its solve result (it sees the image, or
    holds the id: nova.services.access), else None."""
    if job is None:
        return None
    if access.owner_or_public(job["public"], job["owner"], caller_id):
        return job
    return job if access.id_opens_job_ended(_parse_time(job["finished_at"])) else None


def job_answer(job_id: int, caller_id: CallerId) -> dict[str, Any] | None:
    """``/api/jobs/J``: nova's ``{"status"}``, with the queue keys until it ends; None when
    the job does not exist for this caller."""
    reading, queues = _read([("job", job_id)], [job_id])
    facts = status_cache.facts(reading, "job", [job_id], _job_facts)[job_id]
    _note_ended([facts])
    job = _readable(facts, caller_id)
    if job is None:
        return None
    return {"status": JOB_STATUS_BLURB.get(job["status"], "?"), **progress(job, queues)}


def job_info_answer(job_id: int, caller_id: CallerId) -> dict[str, Any] | None:
    """``/api/jobs/J/info``: an id-holder who may not see the image gets the machine's tags
    only."""
    reading, queues = _read([("job", job_id), ("info", job_id)], [job_id])
    facts = status_cache.facts(reading, "job", [job_id], _job_facts)[job_id]
    _note_ended([facts])
    job = _readable(facts, caller_id)
    if job is None:
        return None
    # Built (on a miss) only for a caller who may read it.
    info = status_cache.facts(reading, "info", [job_id], _info_facts)[job_id]
    if info is None:
        return None
    sees_image = access.owner_or_public(job["public"], job["owner"], caller_id)
    payload: dict[str, Any] = {
        "objects_in_field": info["objects_in_field"],
        "machine_tags": info["machine_tags"],
        "tags": info["tags"] if sees_image else info["machine_tags"],
        "status": JOB_STATUS_BLURB.get(job["status"], "?"),
        "original_filename": info["original_filename"],
    }
    if info["calibration"] is not None:
        payload["calibration"] = info["calibration"]
    if info["hints"] is not None:
        # Nova's own key: where the solve's scale and position hints came from.
        payload["hints"] = info["hints"]
    # Nova's own key: how good the solution is (nova.engine.quality); null when none was recorded.
    payload["quality"] = info["quality"]
    if info["webhook_deliveries"] is not None:
        # Nova's own key: the tries to POST this job's end to the upload's callback_url.
        payload["webhook_deliveries"] = info["webhook_deliveries"]
    payload.update(progress(job, queues))
    return payload


def _best(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest solved job, else the newest (models.UserImage.best_job, on facts)."""
    for job in reversed(jobs):
        if job["status"] == JobStatus.SUCCESS:
            return job
    return jobs[-1] if jobs else None


def submission_answer(submission_id: int, caller_id: CallerId) -> dict[str, Any] | None:
    """``/api/submissions/S`` as nova answers it, with the queue keys until every job of it
    has ended; None when the submission does not exist for this caller."""
    # The job ids are in the submission's entry; those this process saw at its last poll
    # are read along with it (a guess, checked against the entry: it only saves a round trip).
    guess = _JOBS_SEEN.get(submission_id, [])
    reading, queues = _read(
        [("submission", submission_id), *(("job", job_id) for job_id in guess)], guess
    )
    facts = status_cache.facts(reading, "submission", [submission_id], _submission_facts)[
        submission_id
    ]
    if facts is None:
        return None
    job_ids = [job_id for _, ids in facts["images"] for job_id in ids]
    found = status_cache.facts(reading, "job", job_ids, _job_facts)
    _note_ended(found.values())
    jobs = {job_id: found[job_id] for job_id in job_ids if found[job_id] is not None}
    readable = access.owner_or_public(
        facts["public"], facts["owner"], caller_id
    ) or access.id_opens_submission_ended(
        _parse_time(facts["finished"]),
        [_parse_time(job["finished_at"]) for job in jobs.values()],
    )
    if not readable:
        return None
    if job_ids != guess:
        if len(_JOBS_SEEN) >= JOBS_SEEN_MAX:
            _JOBS_SEEN.clear()
        _JOBS_SEEN[submission_id] = job_ids
    image_ids = [image_id for image_id, _ in facts["images"]]
    best_jobs = [_best([jobs[j] for j in ids if j in jobs]) for _, ids in facts["images"]]
    payload: dict[str, Any] = {
        "user": facts["owner"],
        # nova's timestamps: str() of a naive UTC datetime, or the string "None".
        "processing_started": str(_parse_time(facts["started"])),
        "processing_finished": str(_parse_time(facts["finished"])),
        "user_images": image_ids,
        "images": image_ids,
        "jobs": [job["id"] if job else None for job in best_jobs],
        "job_calibrations": [
            [job["id"], job["calibration"]]
            for job in best_jobs
            if job is not None and job["calibration"] is not None
        ],
    }
    if facts["error_message"]:
        payload["error_message"] = facts["error_message"]
    payload.update(_submission_progress(facts, submission_id, list(jobs.values()), queues))
    return payload
