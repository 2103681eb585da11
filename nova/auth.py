"""Who is calling: an API session named in request-json, or the session cookie set at login."""

from __future__ import annotations

import json
import secrets
import string
from datetime import timedelta

import flask_login
from flask import current_app, request, session
from werkzeug.exceptions import HTTPException

from .extensions import db
from .models import ApiSession, User, utcnow

SESSION_KEY_ALPHABET = string.ascii_lowercase + string.digits
SESSION_KEY_LENGTH = 32
COOKIE_SESSION_FIELD = "api_session"
_UNSET = object()


def open_api_session(user: User) -> ApiSession:
    """Start an API session for ``user`` (a fresh key on every login, as nova does)."""
    key = "".join(secrets.choice(SESSION_KEY_ALPHABET) for _ in range(SESSION_KEY_LENGTH))
    days = current_app.config["API_SESSION_DAYS"]
    api_session = ApiSession(key=key, user=user, expires_at=utcnow() + timedelta(days=days))
    db.session.add(api_session)
    db.session.commit()
    # Cookie-keeping clients (client.py, astroquery) then fetch product files as this user.
    session[COOKIE_SESSION_FIELD] = key
    return api_session


def session_user(key: object) -> User | None:
    """The user of an unexpired API session, or None."""
    # Keys are alphanumeric ASCII (nova-clients.md): anything else names no session, and
    # never reaches the database (PostgreSQL refuses NUL, no driver takes lone surrogates).
    if (
        not isinstance(key, str)
        or not key
        or len(key) > 64
        or not (key.isascii() and key.isalnum())
    ):
        return None
    api_session = db.session.get(ApiSession, key)
    if api_session is None or api_session.expires_at < utcnow():
        return None
    return api_session.user


def _session_key_in_request_json() -> object:
    try:
        raw = request.form.get("request-json")
    except HTTPException:  # e.g. an oversized body: the caller is answered with that error
        return None
    if not raw:
        return None
    try:
        args = json.loads(raw)
    except (ValueError, RecursionError):  # the view answers malformed request-json itself
        return None
    return args.get("session") if isinstance(args, dict) else None


def current_user() -> User | None:
    """The caller: a signed-in web user, else the API session in request-json, else the API
    session cookie set by /api/login."""
    # Cached on the request itself (not on g, which a test's app context can outlive).
    cached = request.environ.get("nova.user", _UNSET)
    if cached is not _UNSET:
        return cached  # type: ignore[return-value]
    web_user = flask_login.current_user
    user = web_user if web_user and web_user.is_authenticated else None
    if user is None:
        user = session_user(_session_key_in_request_json())
    if user is None:
        user = session_user(session.get(COOKIE_SESSION_FIELD))
    request.environ["nova.user"] = user
    return user
