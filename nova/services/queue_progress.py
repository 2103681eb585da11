"""Where an unfinished job stands: ``queue_position`` (solves ahead of it in the order workers
take them; 0 once solving) and ``eta_seconds`` (from the recent solve durations of its
queue), computed on each poll from redis (RQ's queues are redis lists: LPOS), in the same
round trip as the status entries when the caller sends ``queue_commands`` along.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from redis.client import Pipeline

from nova.db.models import JobStatus, utcnow
from nova.infra import jobqueue
from nova.services import status_cache

log = logging.getLogger(__name__)

# Solve durations kept per queue for the estimate, newest first.
RECENT_DURATIONS = 20


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


def queue_key(name: str) -> str:
    return f"rq:queue:{name}"


@dataclass
class QueueReading:
    """What the queue keys and estimates are computed from: RQ's redis state (its queues
    are lists, its started registries sorted sets) and the recent durations of each queue."""

    quick_length: int
    workers: int
    durations: dict[str, list[bytes]]
    taken: set[str]  # entry ids a worker has taken (in a started registry)
    places: dict[int, tuple[int | None, int | None]]  # job id: its place on each solve queue


def queue_commands(pipe: Pipeline, job_ids: list[int]) -> None:
    """Queue on ``pipe`` what the progress of ``job_ids`` needs (so that it can share a round
    trip with the entries); ``queue_reading`` reads the replies."""
    pipe.llen(queue_key(jobqueue.QUICK_SOLVE_QUEUE))
    pipe.scard("rq:workers")
    for name in jobqueue.SOLVE_QUEUES:
        pipe.lrange(_durations_key(name), 0, -1)
        pipe.zrange(f"rq:wip:{name}", 0, -1)  # RQ's started registries: a worker has it
    for job_id in job_ids:
        pipe.lpos(queue_key(jobqueue.QUICK_SOLVE_QUEUE), jobqueue.solve_entry_id(job_id))
        pipe.lpos(queue_key(jobqueue.SOLVE_QUEUE), jobqueue.solve_entry_id(job_id))


def queue_reading(replies: list[Any], job_ids: list[int]) -> QueueReading:
    """The replies to ``queue_commands(pipe, job_ids)``, read."""
    quick_length, workers, *rest = replies
    queues = len(jobqueue.SOLVE_QUEUES)
    per_queue, places = rest[: 2 * queues], rest[2 * queues :]
    return QueueReading(
        quick_length=int(quick_length),
        workers=int(workers),
        durations=dict(zip(jobqueue.SOLVE_QUEUES, per_queue[0::2], strict=True)),
        # Members are "<entry id>:<execution id>".
        taken={
            member.decode().split(":", 1)[0] for members in per_queue[1::2] for member in members
        },
        places={
            job_id: (places[2 * index], places[2 * index + 1])
            for index, job_id in enumerate(job_ids)
        },
    )


def _read_queues(job_ids: list[int]) -> QueueReading | None:
    try:
        pipe = status_cache.redis_connection().pipeline(transaction=False)
        queue_commands(pipe, job_ids)
        return queue_reading(pipe.execute(), job_ids)
    except redis.exceptions.RedisError:
        return None


def progress(job: dict[str, Any], queues: QueueReading | None = None) -> dict[str, int | None]:
    """``queue_position`` and ``eta_seconds`` of an unfinished job's facts ({} once it has
    ended), from ``queues`` when it was read along with the facts. The position counts the
    solves ahead of it in the order workers take them (every hinted solve before the blind
    ones), 0 once solving; None (and no estimate) for a job not on a queue (a frame of a
    time series, solved by its batch's tasks; a job in the moment between its commit and
    its enqueueing; an entry the reconciler is about to put back). The estimate is the
    recent mean duration of its queue times the rounds of the workers it waits for, less
    what it has run: seconds until it ends, None until a solve of its queue has ended."""
    if job["status"] in (JobStatus.SUCCESS, JobStatus.FAILURE):
        return {}
    if queues is None or job["id"] not in queues.places:
        queues = _read_queues([job["id"]])
        if queues is None:
            return {"queue_position": None, "eta_seconds": None}
    mean = _mean(queues.durations[job["queue"] or jobqueue.SOLVE_QUEUE])
    if job["status"] == JobStatus.SOLVING:
        if mean is None:
            return {"queue_position": 0, "eta_seconds": None}
        started = datetime.fromisoformat(job["started_at"]) if job["started_at"] else None
        ran = (utcnow() - started).total_seconds() if started else 0.0
        return {"queue_position": 0, "eta_seconds": max(1, math.ceil(mean - ran))}
    quick_at, blind_at = queues.places[job["id"]]
    # A worker that took the entry has not claimed the job yet: it is next, whatever a
    # duplicate entry (a reconciler's) further back says.
    if jobqueue.solve_entry_id(job["id"]) in queues.taken:
        ahead = 0
    elif quick_at is not None:
        ahead = int(quick_at)
    elif blind_at is not None:
        ahead = queues.quick_length + int(blind_at)
    else:
        ahead = _retry_position(job["id"])
    if ahead is None:
        return {"queue_position": None, "eta_seconds": None}
    rounds = ahead / max(1, queues.workers) + 1
    eta = max(1, math.ceil(mean * rounds)) if mean is not None else None
    return {"queue_position": ahead, "eta_seconds": eta}


def _retry_position(job_id: int) -> int | None:
    """A retried job's entry has a suffix (jobqueue.enqueue_solve): found by a scan."""
    try:
        ids = [
            rq_id.decode()
            for name in jobqueue.SOLVE_QUEUES
            for rq_id in status_cache.redis_connection().lrange(queue_key(name), 0, -1)
        ]
    except redis.exceptions.RedisError:
        return None
    return next(
        (ahead for ahead, rq_id in enumerate(ids) if jobqueue.is_solve_entry_of(rq_id, job_id)),
        None,
    )
