"""Logs that say which submission and job each line is about.

Every record gets ``submission_id``, ``job_id``, ``image_id`` and ``request_id`` fields when
they are known, found without the code that logs having to pass them:

- in a work horse, from the RQ job being run (``solve-<job id>``, ``submission-<id>``: read
  by nova.infra.rq_ids) and from what the task bound with :func:`bind` (a solve binds its
  submission);
- in a web request, from the URL's ``submission_id`` / ``job_id`` / ``image_id`` and a request
  id (the proxy's ``X-Request-ID``, else a new one, echoed in the response).

``NOVA_LOG_FORMAT=json`` writes one JSON object per line for log collectors; the default text
format appends the ids as ``key=value``. Secrets (API keys, session keys, passwords) are never
put in log messages by Nova; request bodies are never logged.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, has_request_context, request

from nova.extensions import settings
from nova.infra.rq_ids import ids_of_current_job

ID_FIELDS = ("submission_id", "job_id", "image_id", "request_id")
_bound: ContextVar[dict[str, Any] | None] = ContextVar("nova_log_ids", default=None)
REQUEST_ID_KEY = "nova.request_id"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@contextmanager
def bind(**ids: Any) -> Iterator[None]:
    """Add ids to every record logged inside the block (this thread / context only)."""
    token = _bound.set({**(_bound.get() or {}), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def _ids_from_request() -> dict[str, Any]:
    if not has_request_context():
        return {}
    ids: dict[str, Any] = {k: v for k, v in (request.view_args or {}).items() if k in ID_FIELDS}
    assigned = request.environ.get(REQUEST_ID_KEY)
    if assigned:
        ids["request_id"] = assigned
    return ids


def current_ids() -> dict[str, Any]:
    return {**ids_of_current_job(), **_ids_from_request(), **(_bound.get() or {})}


_base_factory = logging.getLogRecordFactory()


def _record_with_ids(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Every record, from any logger, carries the current ids as attributes. (So callers
    name ids with :func:`bind`, not ``extra=``, which logging refuses for existing fields.)"""
    record = _base_factory(*args, **kwargs)
    ids = current_ids()
    for name in ID_FIELDS:
        setattr(record, name, ids.get(name))
    return record


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{name}={value}" for name in ID_FIELDS if (value := getattr(record, name, None))]
        return f"{line} [{' '.join(ids)}]" if ids else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def request_id(offered: str) -> str:
    """The id a request is logged and answered under: the client's X-Request-ID when it is a
    sane one, else a fresh one."""
    return offered if REQUEST_ID.match(offered) else secrets.token_hex(8)


def configure_logging(app: Flask) -> None:
    """One handler on the root logger (stderr: the container's log), with the ids filter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings(app).log_format == "json" else TextFormatter())
    handler.set_name("nova")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "nova":  # another app in this process (tests) replaces it
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.setLogRecordFactory(_record_with_ids)

    @app.before_request
    def assign_request_id() -> None:
        # Kept on the request itself (flask.g can outlive it in tests' app contexts).
        request.environ[REQUEST_ID_KEY] = request_id(request.headers.get("X-Request-ID", ""))

    @app.after_request
    def echo_request_id(response: Response) -> Response:
        if REQUEST_ID_KEY in request.environ:
            response.headers["X-Request-ID"] = request.environ[REQUEST_ID_KEY]
        return response
