"""What the operator page shows of RQ: each queue's counts and each worker's state.

RQ is read here, beside the queue adapter (nova.infra.jobqueue), so the web layer never
imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from rq import Queue, Worker

from nova.infra import jobqueue


@dataclass(frozen=True)
class QueueInfo:
    name: str
    waiting: int
    running: int
    failed: int


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    hostname: str
    pid: int | None
    state: str
    queues: list[str]
    job_id: str | None
    job_since: datetime | None  # naive UTC
    last_heartbeat: datetime | None


def naive_utc(value: datetime | None) -> datetime | None:
    """rq's timestamps may be aware; the database's are naive UTC."""
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def queue_infos() -> list[QueueInfo]:
    connection = jobqueue.redis_connection()
    infos = []
    for name in jobqueue.ALL_QUEUES:
        rq_queue = Queue(name, connection=connection)
        infos.append(
            QueueInfo(
                name=name,
                waiting=rq_queue.count,
                running=rq_queue.started_job_registry.count,
                failed=rq_queue.failed_job_registry.count,
            )
        )
    return infos


def worker_infos() -> list[WorkerInfo]:
    infos = []
    for worker in Worker.all(connection=jobqueue.redis_connection()):
        job = worker.get_current_job()
        since = None
        if job is not None:
            execution = worker.execution
            since = job.started_at or (execution.created_at if execution else None)
        infos.append(
            WorkerInfo(
                name=worker.name,
                hostname=worker.hostname or "",
                pid=worker.pid,
                state=worker.get_state(),
                queues=worker.queue_names(),
                job_id=job.id if job is not None else None,
                job_since=naive_utc(since),
                last_heartbeat=naive_utc(worker.last_heartbeat),
            )
        )
    return sorted(infos, key=lambda info: (info.hostname, info.name))
