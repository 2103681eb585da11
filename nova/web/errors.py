"""nova's one error envelope: the JSON refusal API clients parse and the HTML error page.

Everything under /api/ answers ``{"status": "error", "errormessage": ...}`` as ``text/plain``
(json.dumps with its default separators: byte-for-byte nova's style); every other path gets
the site's error page. The app's error handlers, the rate limits and the API build their
refusals here.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, current_app, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from nova.extensions import db, settings
from nova.infra.metrics import refuse
from nova.services.submissions import QueueFull

API_PREFIX = "/api/"


# nova answers its API in JSON labelled as plain text; its clients parse the body whatever it says.
API_CONTENT_TYPE = "text/plain"


def api_body(payload: dict[str, Any]) -> bytes:
    """A JSON answer's body the way nova writes it: json.dumps's default separators."""
    return json.dumps(payload).encode()


def reply(payload: dict[str, Any], status: int = 200) -> Response:
    """A JSON answer the way nova sends it (api_body, as text/plain)."""
    return Response(api_body(payload), status=status, content_type=API_CONTENT_TYPE)


def api_refusal(message: str, status: int = 200) -> Response:
    """nova's error envelope; HTTP 200 unless told, as nova's clients expect of a refusal."""
    return reply({"status": "error", "errormessage": message}, status)


def error_page(code: int, message: str) -> Response:
    return Response(render_template("error.html", code=code, message=message), status=code)


def is_api_request() -> bool:
    return request.path.startswith(API_PREFIX)


def refusal(message: str, code: int, api_status: int | None = None) -> Response:
    """The envelope on the API (with ``api_status``, else ``code``), the error page elsewhere."""
    if is_api_request():
        return api_refusal(message, code if api_status is None else api_status)
    return error_page(code, message)


def too_large(error: RequestEntityTooLarge) -> Response:
    refuse("too_large")
    config = settings()
    limit = config.max_upload_bytes // (1024 * 1024)
    length = request.content_length
    if length is not None and length <= config.max_upload_bytes:
        # The body is within the upload limit: a form field is what is too large.
        field_kb = current_app.config["MAX_FORM_MEMORY_SIZE"] // 1024
        message = f"A form field is larger than {field_kb:,} kB; files go in file fields."
    else:
        message = f"The upload is larger than the limit of {limit} MB (NOVA_MAX_UPLOAD_MB)."
    return refusal(message, 413)


def queue_full(error: QueueFull) -> Response:
    refuse("queue_full")
    return error_page(429, str(error))


def csrf_error(error: CSRFError) -> Response:
    refuse("form_expired")
    message = "The form expired or was not sent by this site; reload the page and try again."
    return error_page(400, message)


def database_unavailable(error: DBAPIError) -> Response:
    # The database is down or unreachable: the request changed nothing (its transaction
    # is rolled back), and the client may simply try again.
    db.session.rollback()
    current_app.logger.error("database unavailable: %s", error.orig)
    message = "The database is unavailable just now; please try again in a moment."
    response = refusal(message, 503)
    response.headers["Retry-After"] = "5"
    return response


def http_error(error: HTTPException) -> Response:
    if error.response is not None:  # already answered in full (e.g. by a rate limit)
        return error.response  # type: ignore[return-value]
    # API clients parse every answer as JSON, errors included.
    return refusal(error.description, error.code or 500)  # type: ignore[arg-type]


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(RequestEntityTooLarge, too_large)
    app.register_error_handler(QueueFull, queue_full)
    app.register_error_handler(CSRFError, csrf_error)
    app.register_error_handler(OperationalError, database_unavailable)
    app.register_error_handler(HTTPException, http_error)
