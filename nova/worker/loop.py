"""A worker's life after ``nova worker`` has checked its settings: RQ's work loop, the
reconciler beside it, and waiting out redis when it goes away."""

from __future__ import annotations

import signal
import sys
import threading
import time

import redis
from flask import Flask
from rq import Worker

from nova.extensions import db, settings
from nova.infra import jobqueue
from nova.infra.redis_health import redis_alive
from nova.services import reconcile, retention
from nova.worker import context as worker_context


def run_worker(app: Flask, *, burst: bool) -> None:
    """Take jobs from every queue until asked to stop (or, with ``burst``, until they are empty).

    Runs inside ``app``'s context (``nova worker`` holds it); every job runs in ``app`` too.
    """
    worker_context.serve_app(app)
    if not burst:
        threading.Thread(target=_reconcile_forever, args=(app,), daemon=True).start()
    connection = jobqueue.redis_connection()
    while True:
        # Queues in priority order: submissions, then hinted solves, then blind ones.
        worker = Worker(list(jobqueue.ALL_QUEUES), connection=connection)
        try:
            # The scheduler puts webhook retries (RQ's Retry intervals) back on their queue.
            worker.work(burst=burst, logging_level="INFO", with_scheduler=True)
            return  # burst finished, or asked to stop (SIGTERM, SIGINT)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # RQ quits when redis goes away while a job runs. Nothing is lost: the job's row
            # is in the database and its horse finishes it (or the reconciler retries it).
            # Wait for redis and work on, as a new RQ worker (a restarted redis without
            # persistence has forgotten the old one).
            _say(f"redis went away ({exc}); waiting for it to come back")
            # RQ's signal handlers only set a flag on the worker that quit: stop at once.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            while not redis_alive(settings(app).redis_url):
                time.sleep(1)
            _say("redis is back; working on")


def _reconcile_forever(app: Flask) -> None:
    """Every NOVA_RECONCILE_SECONDS: retry jobs whose worker died, re-queue lost entries."""
    config = settings(app)
    last_purge = 0.0
    while True:
        time.sleep(config.reconcile_seconds)
        with app.app_context():
            try:
                counts = reconcile.reconcile(config.max_attempts, config.heartbeat_seconds)
                if any(counts.values()):
                    app.logger.warning("reconciler: %s", counts)
                # Retention, hourly: every worker may do it; deleting twice is harmless.
                if config.retention_days and time.monotonic() - last_purge > 3600:
                    last_purge = time.monotonic()
                    retention.purge(config.retention_days)
            except Exception:  # redis or the database away: try again next round
                app.logger.exception("reconciler round failed")
            finally:
                db.session.remove()


def _say(message: str) -> None:
    """A line for the operator on the worker's stderr, as the command's own messages are."""
    print(message, file=sys.stderr, flush=True)
