"""What ``/metrics`` reports (Prometheus text format), and where each figure is kept.

Three homes, by where a figure arises:

- **Web processes** (gunicorn's workers): uploads refused at the door, counted with
  prometheus-client. Under gunicorn every worker writes its counts to files in
  ``PROMETHEUS_MULTIPROC_DIR`` (nova.gunicorn_config sets one up when NOVA_METRICS is on),
  and a scrape answered by any worker adds them all up: these counts are per web server.
- **Workers**, which may run on other hosts: jobs ended, solve, stage and queue-wait
  seconds, webhook deliveries. They are kept in redis (atomic increments shared by every
  process and host), so any web process reports the whole service's counts.
- **Read at scrape time**: queue depth, workers alive and busy (from redis), unfinished
  jobs (from the database), so they are right however many hosts run workers.

Recording never fails the work it describes: a redis error is logged and the figure lost.
prometheus-client is imported only when first used: gunicorn's master imports this package,
and prometheus-client decides at its import whether it counts in files
(PROMETHEUS_MULTIPROC_DIR, set by nova.gunicorn_config before the workers start) or in memory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask, Response, g, request

from nova.infra import jobqueue

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

REDIS_PREFIX = "nova:metrics:"

# -- uploads refused at the door (web processes) -------------------------------------------

# Why an upload request was answered with an error instead of a submission. Each reason is
# set where the refusal is decided (``refuse``); a refusal nobody named is "invalid_request".
REFUSAL_REASONS = {
    "invalid_request": "no or malformed request-json, or another request error",
    "not_signed_in": "no valid API session (API), or anonymous uploads are off (form)",
    "invalid_argument": "an upload option, star list or album failed validation",
    "no_input": "neither a file, a URL nor x/y lists",
    "empty_file": "the uploaded file is empty",
    "unrecognised_file": "the form's quick check found no image or star list",
    "invalid_url": "the URL is not an absolute http(s) URL or is too long",
    "too_large": "the request is over NOVA_MAX_UPLOAD_MB or the batch limits",
    "frame_count": "a batch with no frames, or more than NOVA_BATCH_MAX_FRAMES",
    "rate_limited": "over NOVA_UPLOAD_RATE_LIMIT",
    "queue_full": "the caller has NOVA_MAX_QUEUED_JOBS waiting",
    "form_expired": "the form's CSRF token is missing or stale",
}
UPLOAD_ENDPOINTS = ("api.upload", "api.url_upload", "batches.upload_batch", "web.upload")

_web_registry: CollectorRegistry | None = None
_uploads_refused: Counter | None = None


def _web_metrics() -> tuple[CollectorRegistry, Counter]:
    """This process's registry and counter, made on first use. Outside gunicorn (tests,
    `flask run`) the registry holds the counts; under gunicorn with PROMETHEUS_MULTIPROC_DIR
    the values live in that directory's files instead."""
    global _web_registry, _uploads_refused
    if _web_registry is None or _uploads_refused is None:
        from prometheus_client import CollectorRegistry, Counter

        _web_registry = CollectorRegistry()
        _uploads_refused = Counter(
            "nova_uploads_refused",
            "Upload requests answered with an error (no submission made), by reason.",
            ["reason"],
            registry=_web_registry,
        )
        for reason in REFUSAL_REASONS:
            _uploads_refused.labels(reason)  # every reason is listed, at 0 until it happens
    return _web_registry, _uploads_refused


def refuse(reason: str) -> None:
    """Name the reason this request's upload is being refused (counted if it then is)."""
    assert reason in REFUSAL_REASONS, reason
    g.nova_refusal_reason = reason


def _is_refusal(response: Response) -> bool:
    if request.endpoint == "web.upload":
        return request.method == "POST" and response.status_code >= 400
    if response.status_code >= 400:
        return True
    if response.direct_passthrough or response.content_length in (None, 0):
        return False
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("status") == "error"


def count_refused_upload(response: Response) -> Response:
    """after_request: an upload endpoint that answered with an error refused an upload."""
    if request.endpoint in UPLOAD_ENDPOINTS and _is_refusal(response):
        reason = g.get("nova_refusal_reason", "invalid_request")
        _web_metrics()[1].labels(reason).inc()
    return response


# -- worker-side figures, kept in redis ----------------------------------------------------


class RedisCounter:
    """A labelled counter whose values are fields of one redis hash (``HINCRBYFLOAT``)."""

    def __init__(
        self, name: str, documentation: str, label: str, known: Sequence[str] = ()
    ) -> None:
        self.name, self.documentation, self.label, self.known = name, documentation, label, known
        self.key = REDIS_PREFIX + name

    def inc(self, connection: redis.Redis, value: str, amount: float = 1.0) -> None:
        connection.hincrbyfloat(self.key, value, amount)

    def family(self, connection: redis.Redis) -> Metric:
        from prometheus_client.core import CounterMetricFamily

        stored = {k.decode(): float(v) for k, v in connection.hgetall(self.key).items()}
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value in sorted(set(self.known) | set(stored)):
            family.add_metric([value], stored.get(value, 0.0))
        return family


class RedisHistogram:
    """A labelled histogram in one redis hash: per label value, a field per bucket (already
    cumulative, as Prometheus wants them), the count and the sum, updated in one MULTI."""

    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.buckets = [*buckets, math.inf]
        self.key = REDIS_PREFIX + name

    def observe(self, pipeline: redis.client.Pipeline, value: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        for bound in self.buckets:
            if seconds <= bound:
                pipeline.hincrby(self.key, f"{value}|{_le(bound)}", 1)
        pipeline.hincrby(self.key, f"{value}|count", 1)
        pipeline.hincrbyfloat(self.key, f"{value}|sum", seconds)

    def family(self, connection: redis.Redis) -> Metric:
        from prometheus_client.core import HistogramMetricFamily

        values: dict[str, dict[str, float]] = {}
        for field, number in connection.hgetall(self.key).items():
            value, _, part = field.decode().rpartition("|")
            values.setdefault(value, {})[part] = float(number)
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value in sorted(values):
            parts = values[value]
            buckets = [(_le(bound), parts.get(_le(bound), 0.0)) for bound in self.buckets]
            family.add_metric([value], buckets, parts.get("sum", 0.0))
        return family


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


JOB_END_STATUSES = ("success", "failure")
JOBS_ENDED = RedisCounter(
    "nova_jobs_ended",
    "Jobs that ended, by status (solved, answered from an earlier solve, or failed).",
    "status",
    JOB_END_STATUSES,
)
SOLVE_SECONDS = RedisHistogram(
    "nova_solve_seconds",
    "Seconds from a worker taking a job to its end (reading the input, extracting, "
    "solving, products), by the job's status; jobs a worker ran only.",
    "status",
    (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
STAGE_SECONDS = RedisHistogram(
    "nova_stage_seconds",
    "Seconds a job spent in each stage of its solve (preparing the input, extracting "
    "stars, solving; summed over the downsampling retry).",
    "stage",
    (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
QUEUE_WAIT_SECONDS = RedisHistogram(
    "nova_queue_wait_seconds",
    "Seconds a job waited in the queue before a worker took it, by the job's status.",
    "status",
    (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 600, 1800, 3600),
)
# Webhooks (upload option callback_url): one count per delivery attempt.
CALLBACK_OUTCOMES = ("delivered", "retrying", "gave_up")
CALLBACK_DELIVERIES = RedisCounter(
    "nova_callback_deliveries",
    "Webhook delivery attempts, by outcome: delivered (a 2xx answer), retrying (failed; "
    "another try follows), gave_up (failed; that was the last try).",
    "outcome",
    CALLBACK_OUTCOMES,
)
REDIS_FAMILIES: tuple[RedisCounter | RedisHistogram, ...] = (
    JOBS_ENDED,
    SOLVE_SECONDS,
    STAGE_SECONDS,
    QUEUE_WAIT_SECONDS,
    CALLBACK_DELIVERIES,
)


def _connection() -> redis.Redis:
    return jobqueue.redis_connection()


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


def job_ended(
    status: str,
    *,
    queued_at: datetime | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    stage_seconds: Mapping[str, float] | None = None,
) -> None:
    """Count a job's end (after it is committed). The timestamps are the job row's: a job a
    worker ran has all three; one answered at once (reuse, an unreadable upload) has none."""
    assert status in JOB_END_STATUSES, status
    try:
        with _connection().pipeline(transaction=True) as pipeline:
            pipeline.hincrbyfloat(JOBS_ENDED.key, status, 1)
            solve = _seconds(started_at, finished_at)
            if solve is not None:
                SOLVE_SECONDS.observe(pipeline, status, solve)
            wait = _seconds(queued_at, started_at)
            if wait is not None:
                QUEUE_WAIT_SECONDS.observe(pipeline, status, wait)
            for stage, seconds in (stage_seconds or {}).items():
                STAGE_SECONDS.observe(pipeline, stage, seconds)
            pipeline.execute()
    except redis.exceptions.RedisError as exc:
        log.warning("could not record the end of a job in the metrics: %s", exc)


def callback_delivery(outcome: str) -> None:
    """Count one webhook delivery attempt: "delivered", "retrying" or "gave_up"."""
    assert outcome in CALLBACK_OUTCOMES, outcome
    try:
        CALLBACK_DELIVERIES.inc(_connection(), outcome)
    except redis.exceptions.RedisError as exc:
        log.warning("could not record a webhook delivery in the metrics: %s", exc)


class StageClock:
    """Seconds a solve spends in each stage: ``enter`` at every change, ``totals`` at the end."""

    def __init__(self, first: str) -> None:
        self.stage = first
        self.since = time.monotonic()
        self.spent: dict[str, float] = {}

    def enter(self, stage: str) -> None:
        now = time.monotonic()
        self.spent[self.stage] = self.spent.get(self.stage, 0.0) + now - self.since
        self.stage, self.since = stage, now

    def totals(self) -> dict[str, float]:
        self.enter(self.stage)
        return dict(self.spent)


# -- the scrape ----------------------------------------------------------------------------


class ServiceCollector:
    """The figures shared by the whole service, read per scrape: the queues and workers from
    redis, and the unfinished jobs as the caller counts them (the database is the services'
    to read, not this module's)."""

    def __init__(self, unfinished_jobs: Callable[[], dict[str, int] | None]) -> None:
        self.unfinished_jobs = unfinished_jobs

    def collect(self) -> Iterator[Metric]:
        yield from self._from_redis()
        yield from self._from_database()

    def _from_redis(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("nova_redis_up", "1 when redis answered this scrape, else 0.")
        try:
            connection = _connection()
            depth = GaugeMetricFamily(
                "nova_queue_depth", "Entries waiting in each queue.", labels=["queue"]
            )
            running = GaugeMetricFamily(
                "nova_queue_running", "Entries being worked on, per queue.", labels=["queue"]
            )
            for name, (waiting, started) in jobqueue.queue_counts(connection).items():
                depth.add_metric([name], waiting)
                running.add_metric([name], started)
            alive, busy = jobqueue.worker_states(connection)
            families = [
                depth,
                running,
                GaugeMetricFamily(
                    "nova_workers_alive",
                    "RQ workers registered in redis (any host); one killed without warning "
                    "counts until its registration expires (RQ's worker TTL, 420 s).",
                    value=alive,
                ),
                GaugeMetricFamily(
                    "nova_workers_busy", "RQ workers working on an entry now.", value=busy
                ),
                *(source.family(connection) for source in REDIS_FAMILIES),
            ]
        except redis.exceptions.RedisError as exc:
            log.warning("metrics: redis did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _from_database(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        counts = self.unfinished_jobs()
        if counts is None:
            return  # the database did not answer (the caller logged why)
        unfinished = GaugeMetricFamily(
            "nova_jobs_unfinished",
            "Jobs in the database not yet ended, by status (queued or solving).",
            labels=["status"],
        )
        for status, count in counts.items():
            unfinished.add_metric([status], count)
        yield unfinished


class _Families:
    """Several collectors as one, for generate_latest."""

    def __init__(self, sources: Iterable[Any]) -> None:
        self.sources = list(sources)

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source.collect()


def exposition(unfinished_jobs: Callable[[], dict[str, int] | None]) -> bytes:
    """The scrape's text: this web server's counts and the service's (``unfinished_jobs``
    counts the jobs not yet ended, by status, or None when the database is away)."""
    from prometheus_client import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        web: Any = MultiProcessCollector(None)  # every gunicorn worker's files, summed
    else:
        web = _web_metrics()[0]
    return generate_latest(_Families([web, ServiceCollector(unfinished_jobs)]))  # type: ignore[arg-type]


def init_metrics(app: Flask) -> None:
    app.after_request(count_refused_upload)
