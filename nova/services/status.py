"""Status answers: the one home of what ``/api/submissions/S``, ``/api/jobs/J`` and
``/api/jobs/J/info`` answer, built by functions any view (or an event stream) can call.

Clients poll these several times a second per job, so an answer's facts are kept in redis
and a poll reads them back without the ORM: one round trip for a job's status (its entry,
its version, the global generation), two for a submission's. Who may read them is decided
on every poll from those facts by nova.services.access (never cached: the id window closes with
time alone), and the caller's session is looked up only when a private row makes it matter.

The cache and its invalidation (SQLAlchemy session events, so no code path that changes state
can forget it) live in nova.services.status_cache.

Unfinished jobs and submissions also get ``queue_position`` (solves ahead of it in the order
workers take them; 0 once solving) and ``eta_seconds`` (from the recent solve durations of
its queue), computed on each poll from redis (RQ's queues are redis lists: LPOS). Both keys
are absent from a finished answer, which is then exactly nova's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import select

from nova.db.models import Calibration, Job, JobStatus, Submission, UserImage, utcnow
from nova.engine.calibration import nova_calibration
from nova.extensions import db
from nova.infra import jobqueue
from nova.services import access, queueing, status_cache

log = logging.getLogger(__name__)

# Solve durations kept per queue for the estimate, newest first.
RECENT_DURATIONS = 20
JOB_STATUS_BLURB = {
    JobStatus.QUEUED: "processing",
    JobStatus.SOLVING: "solving",
    JobStatus.SUCCESS: "success",
    JobStatus.FAILURE: "failure",
}
CallerId = Callable[[], int | None]


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


# -- queue position and estimate ----------------------------------------------------------


def _mean(raw: list[bytes]) -> float | None:
    values = [float(item) for item in raw]
    return sum(values) / len(values) if values else None


def _durations_key(queue_name: str) -> str:
    return f"{status_cache.PREFIX}seconds:{queue_name}"


def record_duration(queue_name: str, seconds: float) -> None:
    """Remember how long a solve of ``queue_name`` took, for the estimates (best effort)."""
    try:
        pipe = status_cache.redis_connection().pipeline(transaction=False)
        pipe.lpush(_durations_key(queue_name), f"{seconds:.3f}")
        pipe.ltrim(_durations_key(queue_name), 0, RECENT_DURATIONS - 1)
        pipe.execute()
    except redis.exceptions.RedisError as exc:
        log.warning("could not record a solve duration: %s", exc)


def _queue_key(name: str) -> str:
    return f"rq:queue:{name}"


def progress(job: dict[str, Any]) -> dict[str, int | None]:
    """``queue_position`` and ``eta_seconds`` of an unfinished job's facts ({} once it has
    ended). The position counts the solves ahead of it in the order workers take them (every
    hinted solve before the blind ones), 0 once solving; None (and no estimate) for a job
    not on a queue (a frame of a time series, solved by its batch's tasks; a job in the
    moment between its commit and its enqueueing; an entry the reconciler is about to put
    back). The estimate is the recent mean duration of its
    queue times the rounds of the workers it waits for, less what it has run: seconds until
    it ends, None until a solve of its queue has ended."""
    if job["status"] in (JobStatus.SUCCESS, JobStatus.FAILURE):
        return {}
    rq_id = jobqueue.solve_entry_id(job["id"])
    try:
        pipe = status_cache.redis_connection().pipeline(transaction=False)
        pipe.lpos(_queue_key(jobqueue.QUICK_SOLVE_QUEUE), rq_id)
        pipe.lpos(_queue_key(jobqueue.SOLVE_QUEUE), rq_id)
        pipe.llen(_queue_key(jobqueue.QUICK_SOLVE_QUEUE))
        pipe.scard("rq:workers")
        pipe.lrange(_durations_key(job["queue"] or jobqueue.SOLVE_QUEUE), 0, -1)
        for name in jobqueue.SOLVE_QUEUES:  # RQ's started registries: a worker has it
            pipe.zrange(f"rq:wip:{name}", 0, -1)
        quick_at, blind_at, quick_length, workers, durations, *started = pipe.execute()
    except redis.exceptions.RedisError:
        return {"queue_position": None, "eta_seconds": None}
    mean = _mean(durations)
    if job["status"] == JobStatus.SOLVING:
        if mean is None:
            return {"queue_position": 0, "eta_seconds": None}
        started = _parse_time(job["started_at"])
        ran = (utcnow() - started).total_seconds() if started else 0.0
        return {"queue_position": 0, "eta_seconds": max(1, math.ceil(mean - ran))}
    # Members are "<entry id>:<execution id>". A worker that took the entry has not claimed
    # the job yet: it is next, whatever a duplicate entry (a reconciler's) further back says.
    taken = any(
        member.decode().split(":", 1)[0] == rq_id for members in started for member in members
    )
    if taken:
        ahead = 0
    elif quick_at is not None:
        ahead = int(quick_at)
    elif blind_at is not None:
        ahead = int(quick_length) + int(blind_at)
    else:
        ahead = _retry_position(job["id"])
    if ahead is None:
        return {"queue_position": None, "eta_seconds": None}
    rounds = ahead / max(1, int(workers)) + 1
    eta = max(1, math.ceil(mean * rounds)) if mean is not None else None
    return {"queue_position": ahead, "eta_seconds": eta}


def job_progress(job_id: int) -> dict[str, int | None]:
    """``progress`` of a job whose visibility the caller has checked (the status page)."""
    job = status_cache.cached("job", [job_id], _job_facts)[job_id]
    return progress(job) if job is not None else {}


def _retry_position(job_id: int) -> int | None:
    """A retried job's entry has a suffix (jobqueue.enqueue_solve): found by a scan."""
    try:
        ids = [
            rq_id.decode()
            for name in jobqueue.SOLVE_QUEUES
            for rq_id in status_cache.redis_connection().lrange(_queue_key(name), 0, -1)
        ]
    except redis.exceptions.RedisError:
        return None
    return next(
        (ahead for ahead, rq_id in enumerate(ids) if jobqueue.is_solve_entry_of(rq_id, job_id)),
        None,
    )


def _submission_progress(
    facts: dict[str, Any], submission_id: int, jobs: list[dict[str, Any]]
) -> dict[str, int | None]:
    """A submission's: its next job's position and the latest estimate of its jobs; before
    it has jobs, its place among the uploads waiting to be read (no estimate)."""
    unfinished = [
        job for job in jobs if job["status"] not in (JobStatus.SUCCESS, JobStatus.FAILURE)
    ]
    if facts["finished"] is None and not facts["images"]:
        try:
            at = status_cache.redis_connection().lpos(
                _queue_key(jobqueue.SUBMISSIONS_QUEUE), jobqueue.submission_entry_id(submission_id)
            )
        except redis.exceptions.RedisError:
            at = None
        return {"queue_position": int(at) if at is not None else None, "eta_seconds": None}
    if not unfinished:
        return {}
    each = [progress(job) for job in unfinished]
    positions = [p["queue_position"] for p in each if p["queue_position"] is not None]
    etas = [p["eta_seconds"] for p in each if p["eta_seconds"] is not None]
    return {
        "queue_position": min(positions) if positions else None,
        "eta_seconds": max(etas) if etas else None,
    }


# -- the answers ------------------------------------------------------------------------


def job_facts(job_id: int, caller_id: CallerId) -> dict[str, Any] | None:
    """The job's facts when the caller may read its solve result (it sees the image, or
    holds the id: nova.services.access), else None."""
    job = status_cache.cached("job", [job_id], _job_facts)[job_id]
    if job is None:
        return None
    if access.owner_or_public(job["public"], job["owner"], caller_id):
        return job
    return job if access.id_opens_job_ended(_parse_time(job["finished_at"])) else None


def job_answer(job_id: int, caller_id: CallerId) -> dict[str, Any] | None:
    """``/api/jobs/J``: nova's ``{"status"}``, with the queue keys until it ends; None when
    the job does not exist for this caller."""
    job = job_facts(job_id, caller_id)
    if job is None:
        return None
    return {"status": JOB_STATUS_BLURB.get(job["status"], "?"), **progress(job)}


def job_info_answer(job_id: int, caller_id: CallerId) -> dict[str, Any] | None:
    """``/api/jobs/J/info``: an id-holder who may not see the image gets the machine's tags
    only."""
    job = job_facts(job_id, caller_id)
    if job is None:
        return None
    info = status_cache.cached("info", [job_id], _info_facts)[job_id]
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
    payload.update(progress(job))
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
    facts = status_cache.cached("submission", [submission_id], _submission_facts)[submission_id]
    if facts is None:
        return None
    job_ids = [job_id for _, ids in facts["images"] for job_id in ids]
    found = status_cache.cached("job", job_ids, _job_facts)
    jobs = {job_id: found[job_id] for job_id in job_ids if found[job_id] is not None}
    readable = access.owner_or_public(
        facts["public"], facts["owner"], caller_id
    ) or access.id_opens_submission_ended(
        _parse_time(facts["finished"]),
        [_parse_time(job["finished_at"]) for job in jobs.values()],
    )
    if not readable:
        return None
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
    payload.update(_submission_progress(facts, submission_id, list(jobs.values())))
    return payload
