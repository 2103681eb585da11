"""Status polls answered before Flask's request machinery: ``GET /api/jobs/J``,
``/api/jobs/J/info`` and ``/api/submissions/S`` from clients that send nothing but the path.

Clients poll these several times a second per job while a solve runs on the same cores. The
answer itself is cheap (nova.services.status reads cached facts from redis); a Flask request
around it costs twice as much again (request context, session, sign-in, limiter and header
hooks). A poll with no cookie, no query string and no body names no caller (see
nova.web.auth.current_user), so its answer is the anonymous one, which needs none of that:
this middleware builds it with the same functions and headers the Flask views use.

Everything else goes to Flask unchanged: other methods and paths, any cookie, query string or
body (they may name a caller or need refreshing), an answer that is not there for an anonymous
caller (Flask answers nova's error), and any error (Flask answers it in nova's envelope).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from nova.engine.params import MAX_ROW_ID
from nova.logs import request_id
from nova.services import status
from nova.web.errors import API_CONTENT_TYPE, api_body
from nova.web.hooks import SECURITY_HEADERS

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# An answer that changes as the job runs, and may be one an id opens: never kept by a cache.
STATUS_CACHE_CONTROL = "no-store"
# The ids the app's row-id converter takes (up to MAX_ROW_ID), less those with leading zeros.
POLL_PATH = re.compile(r"/api/(jobs|submissions)/([1-9][0-9]{0,9})(/info)?")
ANSWERS = {
    ("jobs", None): status.job_answer,
    ("jobs", "/info"): status.job_info_answer,
    ("submissions", None): status.submission_answer,
}


def _anonymous() -> None:
    return None


def _names_no_caller(environ: dict[str, Any]) -> bool:
    """A bare GET: nothing in it can name a caller or ask for a body to be read."""
    return (
        environ.get("REQUEST_METHOD") == "GET"
        and not environ.get("HTTP_COOKIE")
        and not environ.get("QUERY_STRING")
        and environ.get("CONTENT_LENGTH") in (None, "", "0")
        and not environ.get("HTTP_TRANSFER_ENCODING")
    )


class StatusPolls:
    """WSGI middleware: anonymous bare status polls answered from the status cache."""

    def __init__(self, app: Flask, wsgi_app: WsgiApp) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        match = POLL_PATH.fullmatch(environ.get("PATH_INFO", ""))
        answer = ANSWERS.get((match[1], match[3])) if match is not None else None
        if answer is None or int(match[2]) > MAX_ROW_ID or not _names_no_caller(environ):
            return self.wsgi_app(environ, start_response)
        try:
            with self.app.app_context():  # the database, on a cache miss
                payload = answer(int(match[2]), _anonymous)
        except Exception:  # noqa: BLE001 (the Flask view asks again and answers the error)
            log.debug("status poll passed on to Flask", exc_info=True)
            payload = None
        if payload is None:
            return self.wsgi_app(environ, start_response)
        body = api_body(payload)
        start_response(
            "200 OK",
            [
                ("Content-Type", API_CONTENT_TYPE),
                ("Content-Length", str(len(body))),
                ("Cache-Control", STATUS_CACHE_CONTROL),
                *SECURITY_HEADERS,
                ("X-Request-ID", request_id(environ.get("HTTP_X_REQUEST_ID", ""))),
                # The answer to a caller with a cookie may differ.
                ("Vary", "Cookie"),
            ],
        )
        return [body]
