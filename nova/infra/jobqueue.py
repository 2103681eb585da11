"""RQ queues. Queue entries carry only ids; the database row is the job's state."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import redis
from flask import Flask, current_app
from rq import Queue, Retry, Worker
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL
from rq.exceptions import DuplicateJobError, InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.worker_registration import REDIS_WORKER_KEYS

from nova.extensions import settings

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
        connection = redis.Redis.from_url(settings(app).redis_url)
        app.extensions["nova.redis"] = connection
    return connection


def get_queue(name: str) -> Queue:
    return Queue(name, connection=redis_connection())


# Queue entry ids: the one home of the scheme. Every id is deterministic except a batch
# task's (a batch may have any number of tasks and continuations side by side).
def submission_entry_id(submission_id: int) -> str:
    return f"submission-{submission_id}"


def solve_entry_id(job_id: int, attempts: int = 0) -> str:
    """The entry of a job's next solve, after ``attempts`` claims (``Job.attempts``): a
    retry gets an entry of its own (the dead worker's entry may still be cleaned up by RQ
    later, and must not take the retry with it), the same for every reconciler that sees
    the job."""
    return f"solve-{job_id}" if attempts == 0 else f"solve-{job_id}-retry-{attempts}"


def is_solve_entry_of(rq_id: str, job_id: int) -> bool:
    """True for any of a job's solve entries (its first or a retry)."""
    return rq_id == f"solve-{job_id}" or rq_id.startswith(f"solve-{job_id}-retry-")


def webhook_entry_id(job_id: int) -> str:
    return f"webhook-{job_id}"


def _batch_entry_id(batch_id: int, task: int) -> str:
    return f"batch-{batch_id}-{task}-{uuid.uuid4().hex[:8]}"


def _is_batch_entry_of(rq_id: str, batch_id: int) -> bool:
    return rq_id.startswith(f"batch-{batch_id}-")


def _enqueue(
    queue_name: str, func: str, entity_id: int, rq_id: str, timeout: int, **options: object
) -> bool:
    """Enqueue ``func(entity_id)`` once: an entry of this id that is waiting or running is
    already the work (RQ's unique enqueue is atomic); one that has ended or was lost (its
    worker gone, off its queue) is replaced. Return False (and log) when redis cannot be
    reached: that loses nothing, the row stays queued and the reconciler (run when a worker
    starts) puts it back on the queue."""
    try:
        queue = Queue(queue_name, connection=redis_connection())
        for _ in range(2):
            try:
                queue.enqueue(
                    func,
                    entity_id,
                    job_id=rq_id,
                    unique=True,
                    job_timeout=timeout,
                    result_ttl=3600,
                    failure_ttl=7 * 24 * 3600,
                    **options,
                )
                return True
            except DuplicateJobError:
                if is_waiting_or_running(rq_id):
                    return True  # already waiting or running: a second entry would be skipped
                _discard_entry(rq_id)
        return True  # another process replaced the lost entry meanwhile
    except redis.exceptions.RedisError as exc:
        log.warning("could not enqueue %s: %s", rq_id, exc)
        return False


def _discard_entry(rq_id: str) -> None:
    """Remove an entry nobody will run (ended, or lost with its worker), registries and all."""
    connection = redis_connection()
    try:
        RQJob.fetch(rq_id, connection=connection).delete()
    except NoSuchJobError:
        # Only a heartbeat field left (a worker refreshed an entry redis had dropped).
        connection.delete(RQJob.key_for(rq_id))


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


def submission_time_budget(download_timeout: float) -> float:
    """The RQ timeout of a submission: two downloads (the upload's URL, then an archive
    member's) and the reading."""
    return 2 * download_timeout + 120


def enqueue_submission(submission_id: int) -> bool:
    timeout = int(submission_time_budget(settings().download_timeout))
    return _enqueue(
        SUBMISSIONS_QUEUE,
        "nova.worker.tasks.process_submission_job",
        submission_id,
        submission_entry_id(submission_id),
        timeout,
    )


def enqueue_solve(job_id: int, *, quick: bool, attempts: int = 0) -> bool:
    """Queue a job's solve after ``attempts`` claims (``solve_entry_id``), on the quick queue
    when ``quick`` (the caller knows the job: nova.engine.params.is_quick)."""
    # RQ's own timeout is a backstop; the solver enforces SOLVE_TIME_LIMIT itself.
    timeout = settings().solve_time_limit + 120
    return _enqueue(
        QUICK_SOLVE_QUEUE if quick else SOLVE_QUEUE,
        "nova.worker.tasks.solve_job",
        job_id,
        solve_entry_id(job_id, attempts),
        timeout,
    )


def enqueue_delivery(job_id: int, func: str, *, timeout: int, retry_intervals: list[int]) -> bool:
    """Queue the webhook delivery ``func(job_id)``, retried by RQ after each interval."""
    return _enqueue(
        WEBHOOK_QUEUE,
        func,
        job_id,
        webhook_entry_id(job_id),
        timeout,
        retry=Retry(max=len(retry_intervals), interval=retry_intervals),
    )


def queue_position(job_id: int) -> int | None:
    """1-based position of a solve among the waiting solves, in the order workers take them
    (every quick solve before the blind ones), or None when it is not waiting."""
    try:
        ids = [rq_id for name in SOLVE_QUEUES for rq_id in get_queue(name).get_job_ids()]
    except redis.exceptions.RedisError:
        return None
    for position, rq_id in enumerate(ids, start=1):
        if is_solve_entry_of(rq_id, job_id):
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
    timeout = BATCH_SLICE_SECONDS + BATCH_GROUP_SIZE * settings().solve_time_limit + 120
    return _enqueue(
        QUICK_SOLVE_QUEUE,
        "nova.worker.batch_solver.run_batch_task",
        batch_id,
        _batch_entry_id(batch_id, task),
        timeout,
    )


def batch_task_alive(batch_id: int) -> bool:
    """True when one of the batch's tasks is waiting or running."""
    quick = get_queue(QUICK_SOLVE_QUEUE)
    ids = quick.get_job_ids() + StartedJobRegistry(queue=quick).get_job_ids()
    return any(_is_batch_entry_of(rq_id, batch_id) for rq_id in ids)


def worker_count() -> int:
    return int(Worker.count(connection=redis_connection()))


def cancel_solve(job_id: int) -> None:
    """Stop a cancelled job's solve: its waiting entries are cancelled in RQ (moved to its
    canceled registry, never run), and a horse solving it is told through redis
    (nova.infra.cancellation) to kill what it runs. Raises RedisError when redis is away."""
    from nova.infra import cancellation  # the horse's side; imported here to keep queue light

    connection = redis_connection()
    # Longer than any solve may still run: the horse polls it until the job ends.
    cancellation.request(connection, job_id, settings().solve_time_limit + 600)
    for name in SOLVE_QUEUES:
        for rq_id in get_queue(name).get_job_ids():
            if not is_solve_entry_of(rq_id, job_id):
                continue
            try:
                RQJob.fetch(rq_id, connection=connection).cancel()
            except (NoSuchJobError, InvalidJobOperation):
                pass  # taken or ended meanwhile: the horse's watcher or claim_job stops it


def solve_running(job_id: int) -> bool:
    """True while a worker runs one of this job's solve entries."""
    for name in SOLVE_QUEUES:
        for rq_id in StartedJobRegistry(queue=get_queue(name)).get_job_ids():
            if is_solve_entry_of(rq_id, job_id) and is_waiting_or_running(rq_id):
                return True
    return False


def queue_counts(connection: redis.Redis) -> dict[str, tuple[int, int]]:
    """Every queue's (waiting, being worked on) entries, for /metrics."""
    counts = {}
    for name in ALL_QUEUES:
        queue = Queue(name, connection=connection)
        counts[name] = (queue.count, StartedJobRegistry(queue=queue).count)
    return counts


def worker_states(connection: redis.Redis) -> tuple[int, int]:
    """(alive, busy): registered workers whose own key still exists (it expires when the
    worker stops refreshing it), and those of them working on an entry."""
    keys = sorted(connection.smembers(REDIS_WORKER_KEYS))
    if not keys:
        return 0, 0
    with connection.pipeline(transaction=False) as pipeline:
        for key in keys:
            pipeline.hget(key, "state")
        states = pipeline.execute()
    alive = [state for state in states if state is not None]
    return len(alive), sum(state == b"busy" for state in alive)
