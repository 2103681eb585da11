"""Status answers: the one home of what ``/api/submissions/S``, ``/api/jobs/J`` and
``/api/jobs/J/info`` answer, built by functions any view (or an event stream) can call.

Clients poll these several times a second per job, so an answer's facts are kept in redis
and a poll reads them back without the ORM: one round trip for a job's status (its entry,
its version, the global generation), two for a submission's. Who may read them is decided
on every poll from those facts by nova.services.access (never cached: the id window closes with
time alone), and the caller's session is looked up only when a private row makes it matter.

Invalidation has one home too, below the services that change state: every commit that
changed a job, submission, image, calibration, tag or object in the field bumps the
version of the rows it touched (``_collect_changes`` / ``_bump_after_commit``, SQLAlchemy
session events), so no code path that changes state can forget it. A bulk statement
whose rows cannot be named from its WHERE clause bumps the global generation instead,
which invalidates every entry. Versions are read *before* the database, and an entry is
stored with the versions it was built under: a commit that lands meanwhile makes it stale
at once, never right. Entries also expire (``ENTRY_SECONDS``), which bounds staleness if
redis was unreachable when a commit tried to bump a version.

Unfinished jobs and submissions also get ``queue_position`` (solves ahead of it in the order
workers take them; 0 once solving) and ``eta_seconds`` (from the recent solve durations of
its queue), computed on each poll from redis (RQ's queues are redis lists: LPOS). Both keys
are absent from a finished answer, which is then exactly nova's.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import redis
from flask import current_app, has_app_context
from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList

from nova.db.models import (
    Calibration,
    ImageTag,
    Job,
    JobStatus,
    SkyObject,
    Submission,
    UserImage,
    WebhookDelivery,
    utcnow,
)
from nova.engine.calibration import nova_calibration
from nova.extensions import db
from nova.infra import jobqueue
from nova.services import access, queueing

log = logging.getLogger(__name__)

PREFIX = "nova:status:"
GENERATION_KEY = PREFIX + "generation"
# An entry lives this long; a version key much longer (an expired version reads as 0, and an
# entry stored under 0 must have expired before that can happen again).
ENTRY_SECONDS = 120
VERSION_SECONDS = 2 * 24 * 3600
# Solve durations kept per queue for the estimate, newest first.
RECENT_DURATIONS = 20
JOB_STATUS_BLURB = {
    JobStatus.QUEUED: "processing",
    JobStatus.SOLVING: "solving",
    JobStatus.SUCCESS: "success",
    JobStatus.FAILURE: "failure",
}
CallerId = Callable[[], int | None]


def _redis() -> redis.Redis:
    return jobqueue.redis_connection()


def _version_key(kind: str, row_id: int) -> str:
    return f"{PREFIX}v:{kind}:{row_id}"


def _entry_key(kind: str, row_id: int) -> str:
    return f"{PREFIX}e:{kind}:{row_id}"


def _as_int(raw: bytes | None) -> int:
    return int(raw) if raw is not None else 0


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


# -- the cache -------------------------------------------------------------------------------


def _cached(kind: str, ids: list[int], build: Callable[[int], Any]) -> dict[int, Any]:
    """The facts of each id (``build(id)`` from the database when its entry is missing or
    stale, then stored); a row that does not exist is None (cached too)."""
    if not ids:
        return {}
    try:
        connection = _redis()
        pipe = connection.pipeline(transaction=False)
        pipe.get(GENERATION_KEY)
        for row_id in ids:
            pipe.get(_entry_key(kind, row_id))
            pipe.get(_version_key(kind, row_id))
        replies = pipe.execute()
    except redis.exceptions.RedisError as exc:
        log.warning("status cache unavailable (%s): answering from the database", exc)
        return {row_id: build(row_id) for row_id in ids}
    generation = _as_int(replies[0])
    found: dict[int, Any] = {}
    missing: list[tuple[int, int]] = []
    for index, row_id in enumerate(ids):
        raw, version = replies[1 + 2 * index], _as_int(replies[2 + 2 * index])
        if raw is not None:
            entry = json.loads(raw)
            if entry["v"] == version and entry["g"] == generation:
                found[row_id] = entry["d"]
                continue
        missing.append((row_id, version))
    if missing:
        pipe = connection.pipeline(transaction=False)
        for row_id, version in missing:
            # Built after the versions were read: a commit meanwhile makes this stale.
            facts = found[row_id] = build(row_id)
            entry = json.dumps({"v": version, "g": generation, "d": facts})
            pipe.set(_entry_key(kind, row_id), entry, ex=ENTRY_SECONDS)
        try:
            pipe.execute()
        except redis.exceptions.RedisError as exc:
            log.warning("could not store status entries: %s", exc)
    return found


def _job_facts(job_id: int) -> dict[str, Any] | None:
    with db.engine.connect() as connection:
        row = connection.execute(
            select(
                Job.status,
                Job.stage,
                Job.started_at,
                Job.finished_at,
                UserImage.publicly_visible,
                UserImage.user_id,
                UserImage.submission_id,
                Calibration.id.label("calibration_id"),
            )
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
    return f"{PREFIX}seconds:{queue_name}"


def record_duration(queue_name: str, seconds: float) -> None:
    """Remember how long a solve of ``queue_name`` took, for the estimates (best effort)."""
    try:
        pipe = _redis().pipeline(transaction=False)
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
        pipe = _redis().pipeline(transaction=False)
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
    job = _cached("job", [job_id], _job_facts)[job_id]
    return progress(job) if job is not None else {}


def _retry_position(job_id: int) -> int | None:
    """A retried job's entry has a suffix (jobqueue.enqueue_solve): found by a scan."""
    try:
        ids = [
            rq_id.decode()
            for name in jobqueue.SOLVE_QUEUES
            for rq_id in _redis().lrange(_queue_key(name), 0, -1)
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
            at = _redis().lpos(
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
    job = _cached("job", [job_id], _job_facts)[job_id]
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
    info = _cached("info", [job_id], _info_facts)[job_id]
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
    facts = _cached("submission", [submission_id], _submission_facts)[submission_id]
    if facts is None:
        return None
    job_ids = [job_id for _, ids in facts["images"] for job_id in ids]
    found = _cached("job", job_ids, _job_facts)
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


# -- invalidation: the one place every state change passes ----------------------------------

_PENDING = "nova.services.status.changed"
# Tables the answers are built from, and the entries a change of one of their rows touches.
_WATCHED = frozenset(
    {
        "jobs",
        "submissions",
        "user_images",
        "calibrations",
        "image_tags",
        "sky_objects",
        "webhook_deliveries",
    }
)


class _Changes:
    def __init__(self) -> None:
        self.jobs: set[int] = set()
        self.submissions: set[int] = set()
        self.everything = False


def _changes(session: Session) -> _Changes:
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = _Changes()
    return pending


def _jobs_of_images(session: Session, image_ids: Iterable[int]) -> list[int]:
    ids = [i for i in image_ids if i is not None]
    if not ids:
        return []
    return list(session.connection().scalars(select(Job.id).where(Job.user_image_id.in_(ids))))


def _submissions_of_images(session: Session, image_ids: Iterable[int]) -> list[int]:
    ids = [i for i in image_ids if i is not None]
    if not ids:
        return []
    return list(
        session.connection().scalars(select(UserImage.submission_id).where(UserImage.id.in_(ids)))
    )


@event.listens_for(Session, "after_flush")
def _collect_changes(session: Session, flush_context: object) -> None:
    """Note the rows this flush changed (the lists still hold the flushed objects)."""
    changes = _changes(session)
    deleted_images = {
        obj.id: obj.submission_id for obj in session.deleted if isinstance(obj, UserImage)
    }
    images_of_new_jobs: set[int] = set()
    images_changed: set[int] = set()
    for obj in [*session.new, *session.dirty, *session.deleted]:
        if isinstance(obj, Job):
            changes.jobs.add(obj.id)
            if obj in session.new or obj in session.deleted:  # the submission's job list
                if obj.user_image_id in deleted_images:
                    changes.submissions.add(deleted_images[obj.user_image_id])
                else:
                    images_of_new_jobs.add(obj.user_image_id)
        elif isinstance(obj, Submission):
            changes.submissions.add(obj.id)
        elif isinstance(obj, UserImage):
            changes.submissions.add(obj.submission_id)
            images_changed.add(obj.id)  # visibility or owner of its jobs' answers
        elif isinstance(obj, Calibration | WebhookDelivery):
            changes.jobs.add(obj.job_id)
        elif isinstance(obj, ImageTag | SkyObject):
            images_changed.add(obj.user_image_id)
    changes.submissions.update(_submissions_of_images(session, images_of_new_jobs))
    changes.jobs.update(_jobs_of_images(session, images_changed - deleted_images.keys()))


def _ids_in_where(whereclause: object, table_name: str) -> set[int] | None:
    """The ids a WHERE clause restricts ``table_name``'s rows to (``id = x`` or ``id IN
    (...)``, alone or in an AND); None when it names none."""
    terms = (
        list(whereclause.clauses)
        if isinstance(whereclause, BooleanClauseList) and whereclause.operator is operators.and_
        else [whereclause]
    )
    for term in terms:
        if not isinstance(term, BinaryExpression):
            continue
        column, value = term.left, term.right
        if (
            getattr(column, "name", None) != "id"
            or getattr(getattr(column, "table", None), "name", None) != table_name
        ):
            continue
        if not isinstance(value, BindParameter):
            continue
        if term.operator is operators.eq and isinstance(value.value, int):
            return {value.value}
        if term.operator is operators.in_op and isinstance(value.value, list | tuple):
            if all(isinstance(item, int) for item in value.value):
                return set(value.value)
    return None


@event.listens_for(Session, "do_orm_execute")
def _collect_bulk_changes(state: ORMExecuteState) -> Any:
    """Bulk UPDATE and DELETE statements (claim_job, stages, the reconciler, retention)."""
    if not (state.is_update or state.is_delete):
        return None
    table_name = getattr(state.statement.table, "name", None)  # type: ignore[attr-defined]
    if table_name not in _WATCHED:
        return None
    result = state.invoke_statement()
    if getattr(result, "rowcount", 1) == 0:
        return result  # changed nothing
    changes = _changes(state.session)
    ids = _ids_in_where(state.statement.whereclause, table_name)  # type: ignore[attr-defined]
    if ids is not None and state.is_update and table_name == "jobs":
        changes.jobs.update(ids)
    elif ids is not None and state.is_update and table_name == "submissions":
        changes.submissions.update(ids)
    else:
        changes.everything = True
    return result


@event.listens_for(Session, "after_commit")
def _bump_after_commit(session: Session) -> None:
    changes = session.info.pop(_PENDING, None)
    if (
        changes is None
        or not has_app_context()
        or "nova.infra.storage" not in current_app.extensions
    ):
        return
    if not (changes.jobs or changes.submissions or changes.everything):
        return
    try:
        pipe = _redis().pipeline(transaction=False)
        for kind, ids in (("job", changes.jobs), ("info", changes.jobs)):
            for row_id in ids:
                pipe.incr(_version_key(kind, row_id))
                pipe.expire(_version_key(kind, row_id), VERSION_SECONDS)
        for row_id in changes.submissions:
            pipe.incr(_version_key("submission", row_id))
            pipe.expire(_version_key("submission", row_id), VERSION_SECONDS)
        if changes.everything:
            pipe.incr(GENERATION_KEY)
        pipe.execute()
    except redis.exceptions.RedisError as exc:
        # The entries expire within ENTRY_SECONDS; until then polls may answer the old state.
        log.warning("could not invalidate status answers: %s", exc)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, previous_transaction: object) -> None:
    if not session.in_transaction():
        session.info.pop(_PENDING, None)
