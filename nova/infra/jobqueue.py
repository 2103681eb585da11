"""RQ queues. Queue entries carry only ids; the database row is the job's state."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import redis
from flask import Flask, current_app
from rq import Queue, Worker
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import StartedJobRegistry

from nova.db.models import Job
from nova.engine.params import SolveParams
from nova.extensions import db

log = logging.getLogger(__name__)

SUBMISSIONS_QUEUE = "default"
SOLVE_QUEUE = "solve"
# Solves that are quick by nature: a scale or position hint, or a star list (no extraction).
# They have a queue of their own so that a slow blind solve never holds them up.
QUICK_SOLVE_QUEUE = "solve-quick"
# Webhook deliveries (nova.services.webhooks): a few seconds each at most, never behind a solve.
WEBHOOK_QUEUE = "webhooks"
# Workers take queues in this order: submissions (quick to recognise), webhooks, then hinted
# solves, then blind ones.
ALL_QUEUES = (SUBMISSIONS_QUEUE, WEBHOOK_QUEUE, QUICK_SOLVE_QUEUE, SOLVE_QUEUE)
SOLVE_QUEUES = (QUICK_SOLVE_QUEUE, SOLVE_QUEUE)
# While a work horse runs, its worker refreshes the entry's heartbeat every monitoring
# interval. A "started" entry silent for longer lost its worker (killed, or redis went away
# mid-job and the worker quit): RQ would only notice when the job's timeout expires.
STARTED_SILENCE = timedelta(seconds=2 * DEFAULT_JOB_MONITORING_INTERVAL + 30)


def redis_connection(app: Flask | None = None) -> redis.Redis:
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    connection = app.extensions.get("nova.redis")
    if connection is None:
        connection = redis.Redis.from_url(app.config["REDIS_URL"])
        app.extensions["nova.redis"] = connection
    return connection


def get_queue(name: str) -> Queue:
    return Queue(name, connection=redis_connection())


def _enqueue(
    queue_name: str, func: str, entity_id: int, rq_id: str, timeout: int, force: bool = False
) -> bool:
    """Enqueue ``func(entity_id)``; return False (and log) when redis cannot be reached.

    A failed enqueue loses nothing: the row stays queued and the reconciler (run when a
    worker starts) puts it back on the queue.
    """
    try:
        connection = redis_connection()
        if not force and is_waiting_or_running(rq_id):
            return True  # already waiting or running: a second entry would only be skipped
        Queue(queue_name, connection=connection).enqueue(
            func,
            entity_id,
            job_id=rq_id,
            job_timeout=timeout,
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,
        )
    except redis.exceptions.RedisError as exc:
        log.warning("could not enqueue %s: %s", rq_id, exc)
        return False
    return True


def is_waiting_or_running(rq_id: str) -> bool:
    """True when the queue holds this entry as waiting (on its queue) or running (with a
    live worker); False when it is lost or has ended."""
    connection = redis_connection()
    if not RQJob.exists(rq_id, connection):
        return False
    try:
        entry = RQJob.fetch(rq_id, connection=connection)
    except NoSuchJobError:
        # Only a heartbeat field left (a worker refreshed an entry redis had dropped): no
        # entry anyone will run; enqueueing writes a whole one over it.
        return False
    status = entry.get_status()
    if status == JobStatus.STARTED:
        beat = entry.last_heartbeat or entry.started_at
        if beat is None:
            return True  # just taken by a worker
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        return datetime.now(UTC) - beat < STARTED_SILENCE
    if status == JobStatus.QUEUED:
        # Redis stopping during an enqueue can keep the entry without its place in the queue:
        # then no worker would ever take it.
        queue_key = Queue(entry.origin, connection=connection).key
        return connection.lpos(queue_key, rq_id) is not None
    return status in (JobStatus.SCHEDULED, JobStatus.DEFERRED)


def enqueue_submission(submission_id: int) -> bool:
    timeout = 2 * current_app.config["DOWNLOAD_TIMEOUT"] + 120
    return _enqueue(
        SUBMISSIONS_QUEUE,
        "nova.worker.tasks.process_submission_job",
        submission_id,
        f"submission-{submission_id}",
        timeout,
    )


# A hint makes a solve quick only when it narrows the search: a scale range at most this
# wide (high / low; a careful +-20 % hint is 1.5) or a position within this radius. Wider
# "hints" (0-180 degrees, a whole-sky radius) are blind solves and wait with them.
QUICK_SCALE_SPREAD = 4.0
QUICK_RADIUS_DEGREES = 30.0


def is_quick(params: SolveParams, kind: str) -> bool:
    """A solve that a hint or a star list makes quick: it goes to QUICK_SOLVE_QUEUE."""
    if kind == "xylist":
        return True
    if params.has_position_hint and (params.radius or 180.0) <= QUICK_RADIUS_DEGREES:
        return True
    bounds = params.scale_bounds()
    if bounds is None:
        return False
    low, high = bounds
    return low > 0 and high / low <= QUICK_SCALE_SPREAD


def solve_queue_for(job_id: int) -> str:
    """The queue a job's solve belongs on, from its parameters and input kind."""
    job = db.session.get(Job, job_id)
    if job is None or job.user_image is None:
        return SOLVE_QUEUE
    image = job.user_image
    return (
        QUICK_SOLVE_QUEUE
        if is_quick(SolveParams.from_row(image.submission), image.kind)
        else SOLVE_QUEUE
    )


def enqueue_solve(job_id: int, force: bool = False) -> bool:
    """Queue a solve; ``force`` replaces an entry that still looks alive in redis but whose
    worker is known to be dead (the reconciler's retries)."""
    # RQ's own timeout is a backstop; the solver enforces SOLVE_TIME_LIMIT itself.
    timeout = current_app.config["SOLVE_TIME_LIMIT"] + 120
    # A retry gets an entry of its own: the dead worker's entry may still be cleaned up by RQ
    # later, and must not take the retry with it.
    rq_id = f"solve-{job_id}-retry-{uuid.uuid4().hex[:8]}" if force else f"solve-{job_id}"
    return _enqueue(
        solve_queue_for(job_id), "nova.worker.tasks.solve_job", job_id, rq_id, timeout, force=force
    )


def _is_entry_of(rq_id: str, job_id: int) -> bool:
    return rq_id == f"solve-{job_id}" or rq_id.startswith(f"solve-{job_id}-retry-")


def queue_position(job_id: int) -> int | None:
    """1-based position of a solve among the waiting solves, in the order workers take them
    (every quick solve before the blind ones), or None when it is not waiting."""
    try:
        ids = [rq_id for name in SOLVE_QUEUES for rq_id in get_queue(name).get_job_ids()]
    except redis.exceptions.RedisError:
        return None
    for position, rq_id in enumerate(ids, start=1):
        if _is_entry_of(rq_id, job_id):
            return position
    return None


# A batch task solves frames for this long, then queues its own continuation at the back of
# the queue: other uploads get their turn, and RQ's timeout stays that of one slice.
BATCH_SLICE_SECONDS = 60
# Frames solved by one engine run once a batch's chain has a frame to start from (starting
# the engine and opening the index files costs about as much as a hinted star-list solve).
BATCH_GROUP_SIZE = 8


def enqueue_batch(batch_id: int, task: int) -> bool:
    """Queue one of a batch's tasks (``nova.worker.batch_solver``); each takes frames until none is
    left, so any number of them may run side by side."""
    # The slice is checked between groups, and each frame of a group has its own time limit.
    timeout = BATCH_SLICE_SECONDS + BATCH_GROUP_SIZE * current_app.config["SOLVE_TIME_LIMIT"] + 120
    rq_id = f"batch-{batch_id}-{task}-{uuid.uuid4().hex[:8]}"
    return _enqueue(
        QUICK_SOLVE_QUEUE, "nova.worker.batch_solver.run_batch_task", batch_id, rq_id, timeout
    )


def batch_task_alive(batch_id: int) -> bool:
    """True when one of the batch's tasks is waiting or running."""
    prefix = f"batch-{batch_id}-"
    quick = get_queue(QUICK_SOLVE_QUEUE)
    ids = quick.get_job_ids() + StartedJobRegistry(queue=quick).get_job_ids()
    return any(rq_id.startswith(prefix) for rq_id in ids)


def worker_count() -> int:
    return int(Worker.count(connection=redis_connection()))


def cancel_solve(job_id: int) -> None:
    """Stop a cancelled job's solve: its waiting entries are cancelled in RQ (moved to its
    canceled registry, never run), and a horse solving it is told through redis
    (nova.infra.cancellation) to kill what it runs. Raises RedisError when redis is away."""
    from nova.infra import cancellation  # the horse's side; imported here to keep queue light

    connection = redis_connection()
    # Longer than any solve may still run: the horse polls it until the job ends.
    cancellation.request(connection, job_id, current_app.config["SOLVE_TIME_LIMIT"] + 600)
    for name in SOLVE_QUEUES:
        for rq_id in get_queue(name).get_job_ids():
            if not _is_entry_of(rq_id, job_id):
                continue
            try:
                RQJob.fetch(rq_id, connection=connection).cancel()
            except (NoSuchJobError, InvalidJobOperation):
                pass  # taken or ended meanwhile: the horse's watcher or claim_job stops it


def solve_running(job_id: int) -> bool:
    """True while a worker runs one of this job's solve entries."""
    for name in SOLVE_QUEUES:
        for rq_id in StartedJobRegistry(queue=get_queue(name)).get_job_ids():
            if _is_entry_of(rq_id, job_id) and is_waiting_or_running(rq_id):
                return True
    return False
