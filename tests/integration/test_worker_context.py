"""The worker's app: jobs run in the app ``nova worker`` serves, and say how to start the
worker when there is none (the worker layer never builds an app itself)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from flask import Flask, current_app

from nova.worker import context


def in_a_fresh_thread(job: Callable[[], object]) -> object:
    """Run ``job`` in a thread of its own: it starts with no app context, as an RQ job does."""
    results: list[object] = []

    def run() -> None:
        try:
            results.append(job())
        except Exception as exc:  # handed back to the test, which checks it
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return results[0]


def app_of_a_job() -> Flask:
    with context.app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]


def test_a_job_runs_in_the_app_the_worker_serves(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "_worker_app", None)
    context.serve_app(app)
    assert in_a_fresh_thread(app_of_a_job) is app


def test_a_job_in_a_worker_without_an_app_says_how_to_start_it(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context, "_worker_app", None)
    error = in_a_fresh_thread(app_of_a_job)
    assert isinstance(error, RuntimeError)
    assert "nova worker" in str(error)
