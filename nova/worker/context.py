"""The app a worker's jobs run in: given by whoever starts the worker (``nova worker``).

The worker layer sits below the app factory, so it never builds an app itself; a job that
finds neither an app context nor a served app says how to start the worker instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, has_app_context

from nova.extensions import db

_worker_app: Flask | None = None


def serve_app(app: Flask) -> None:
    """Make ``app`` the one every job of this worker process (and its forks) runs in."""
    global _worker_app
    _worker_app = app


@contextmanager
def app_context() -> Iterator[None]:
    """Run inside the worker's app context (the one ``nova worker`` holds, or the served app)."""
    if has_app_context():
        # A forked work horse inherits the worker's pooled connections: never share them
        # with the parent (PostgreSQL connections must not cross a fork).
        db.engine.dispose(close=False)
        yield
        return
    if _worker_app is None:
        raise RuntimeError(
            "This worker has no Nova app: run it with `nova worker`, or call "
            "nova.worker.context.serve_app(app) before it takes jobs."
        )
    with _worker_app.app_context():
        # Connections inherited from the parent process must not be shared with it.
        db.engine.dispose(close=False)
        yield
