"""nova's protocol: the "api" blueprint, request-json, sessions, refusals, and login."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from flask import Blueprint, Response, request

from nova.db.models import ApiSession, User
from nova.extensions import db
from nova.infra.metrics import refuse
from nova.services import submissions
from nova.services.accounts import user_for_api_key
from nova.web.auth import open_api_session, session_user
from nova.web.errors import api_refusal, reply

bp = Blueprint("api", __name__, url_prefix="/api")
ANY_METHOD = ["GET", "POST"]


class ApiError(Exception):
    """Answered as nova's error envelope (HTTP 200 unless a status is given)."""

    def __init__(self, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@bp.errorhandler(ApiError)
def api_error(error: ApiError) -> Response:
    return api_refusal(error.message, error.status)


@bp.errorhandler(submissions.QueueFull)
def queue_full(error: submissions.QueueFull) -> Response:
    refuse("queue_full")
    # HTTP 200 with the envelope, as for every refusal clients are to show (nova-clients.md).
    return api_refusal(str(error))


def fail(message: str) -> NoReturn:
    raise ApiError(message)


def json_args() -> dict[str, Any]:
    raw = request.form.get("request-json")
    if not raw:
        fail("no json")
    try:
        args = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        fail(f'failed to parse JSON: "{raw[:1000]}"')
    if not isinstance(args, dict):
        fail("request-json must be a JSON object")
    if not _storable(args):
        fail("request-json holds a NUL character or an unpaired UTF-16 surrogate")
    return args


def _storable(value: object) -> bool:
    r"""True when every string in ``value`` can be stored and hashed: JSON may carry "\u0000"
    (PostgreSQL text refuses it) and lone surrogates such as "\ud800" (not encodable)."""
    pending = [value]
    while pending:  # iterative: the nesting depth is the client's choice
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or any("\ud800" <= char <= "\udfff" for char in item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def require_session(args: dict[str, Any]) -> ApiSession:
    if "session" not in args:
        refuse("not_signed_in")
        fail('no "session" in JSON.')
    key = args["session"]
    api_session = db.session.get(ApiSession, key) if isinstance(key, str) and key else None
    if api_session is None:
        refuse("not_signed_in")
        fail(f'no session with key "{key}"')
    return api_session


def require_login(args: dict[str, Any]) -> User:
    user = session_user(require_session(args).key)
    if user is None:  # the session exists but has expired
        refuse("not_signed_in")
        fail("user is not authenticated.")
    return user


# -- login and uploads ---------------------------------------------------------------------


@bp.route("/login", methods=ANY_METHOD)
def login() -> Response:
    args = json_args()
    if args.get("apikey") is None:  # absent or null, as nova
        fail('need "apikey"')
    key = args["apikey"]
    user = user_for_api_key(key) if isinstance(key, str) and key else None
    if user is None:
        fail("bad apikey")
    api_session = open_api_session(user)
    return reply(
        {
            "status": "success",
            "message": f"authenticated user: {user.email}",
            "session": api_session.key,
        }
    )
