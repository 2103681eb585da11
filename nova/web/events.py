"""Live events: ``GET /api/jobs/J/events`` and ``/api/submissions/S/events`` as
text/event-stream (nova.services.events says how changes are signalled and numbered).

Each event is named after the stage reached (queued, extracting, solving, success,
failure); its data is the status answer of /api/jobs/J or /api/submissions/S, made by that
view itself; its id is the progress number, so Last-Event-ID resumes after it. The stream
ends after the final event; a client that has seen it gets 204 (EventSource stops then).

A stream holds one gunicorn thread while it waits: each web process serves at most
NOVA_EVENTS_MAX_WATCHERS at once and answers more at once with 503 and Retry-After (poll the
status instead); a stream also ends after NOVA_EVENTS_MAX_SECONDS (the client reconnects).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import Blueprint, Flask, Response, current_app, request, stream_with_context

from nova.db.models import Job, Submission
from nova.extensions import db, settings
from nova.infra import jobqueue
from nova.services import events
from nova.web import api
from nova.web.errors import api_refusal

bp = Blueprint("events", __name__, url_prefix="/api")
EVENT_STREAM = "text/event-stream"
# Seconds an over-the-cap client is asked to wait before trying a stream again.
RETRY_AFTER_SECONDS = 10


@dataclass(frozen=True)
class Snapshot:
    progress: events.Progress
    data: str  # the status answer, JSON


def _watchers(app: Flask) -> threading.BoundedSemaphore:
    semaphore = app.extensions.get("nova.event_watchers")
    if semaphore is None:
        semaphore = threading.BoundedSemaphore(max(settings(app).events_max_watchers, 1))
        app.extensions["nova.event_watchers"] = semaphore
    return semaphore


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") or ""
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdecimal() and len(raw) < 12 else -1


def _job_snapshot(job_id: int) -> Snapshot:
    answer = api.job_status(job_id)  # visibility and the answer: the status view's own
    job = db.session.get(Job, job_id)
    if job is None:
        raise api.ApiError("job does not exist", 404)
    return Snapshot(events.job_progress(job), answer.get_data(as_text=True))


def _submission_snapshot(submission_id: int) -> Snapshot:
    answer = api.submission_status(submission_id)
    submission = db.session.get(Submission, submission_id)
    if submission is None:
        raise api.ApiError("submission does not exist", 404)
    return Snapshot(events.submission_progress(submission), answer.get_data(as_text=True))


def _format(snapshot: Snapshot) -> str:
    # The data is one line of JSON (json.dumps never writes a newline).
    return (
        f"id: {snapshot.progress.number}\n"
        f"event: {snapshot.progress.event}\n"
        f"data: {snapshot.data}\n\n"
    )


class _Watch:
    """One stream's hold on a watcher place and a redis subscription, let go exactly once
    (when the stream ends, or when the server closes a response it never started)."""

    def __init__(self, semaphore: threading.BoundedSemaphore, channel: str) -> None:
        self._semaphore = semaphore
        self._released = False
        self._lock = threading.Lock()
        self.pubsub = jobqueue.redis_connection().pubsub(ignore_subscribe_messages=True)
        try:
            self.pubsub.subscribe(channel)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        try:
            self.pubsub.close()
        finally:
            self._semaphore.release()


def _stream(channel: str, snapshot: Callable[[], Snapshot]) -> Response:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    config = settings(app)
    semaphore = _watchers(app)
    if config.events_max_watchers == 0 or not semaphore.acquire(blocking=False):
        return _too_many()
    try:
        # Subscribed before the first read: a change in between is not missed.
        watch = _Watch(semaphore, channel)
    except Exception:
        semaphore.release()
        raise
    try:
        current = snapshot()
        db.session.rollback()  # no transaction (nor pooled connection) held while waiting
    except api.ApiError as error:
        watch.close()
        return api.api_error(error)
    except BaseException:
        watch.close()
        raise
    last = _last_event_id()
    if current.progress.final and last >= current.progress.number:
        watch.close()
        return Response(status=204)  # seen it all: EventSource stops reconnecting

    def generate() -> Iterator[str]:
        nonlocal current, last
        ends = time.monotonic() + config.events_max_seconds
        keepalive = config.events_keepalive_seconds
        try:
            yield "retry: 2000\n\n"
            while True:
                if current.progress.number > last:
                    yield _format(current)
                    last = current.progress.number
                if current.progress.final:
                    return
                remaining = ends - time.monotonic()
                if remaining <= 0:
                    return
                message = watch.pubsub.get_message(timeout=min(keepalive, remaining))
                if message is None:
                    yield ": alive\n\n"  # also how a gone client is noticed
                while message is not None:  # one look for a burst of changes
                    message = watch.pubsub.get_message(timeout=0)
                try:
                    current = snapshot()
                except api.ApiError:
                    return  # gone (deleted) or no longer visible
                finally:
                    db.session.rollback()
        finally:
            watch.close()

    response = Response(stream_with_context(generate()), content_type=EVENT_STREAM)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # proxies: pass each event on at once
    response.call_on_close(watch.close)
    return response


def _too_many() -> Response:
    message = (
        "too many live event streams are open; poll the status instead, or try again in "
        f"{RETRY_AFTER_SECONDS} s"
    )
    response = api_refusal(message, 503)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@bp.get("/jobs/<int:job_id>/events")
def job_events(job_id: int) -> Response:
    return _stream(events.job_channel(job_id), lambda: _job_snapshot(job_id))


@bp.get("/submissions/<int:submission_id>/events")
def submission_events(submission_id: int) -> Response:
    return _stream(
        events.submission_channel(submission_id), lambda: _submission_snapshot(submission_id)
    )
