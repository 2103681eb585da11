"""Who is calling: an API session named in request-json, or the session cookie set at login."""

from __future__ import annotations

import hmac
import json

import flask_login
from flask import request, session
from werkzeug.exceptions import HTTPException

from nova.db.models import ApiSession, User, utcnow
from nova.extensions import db, settings
from nova.services import accounts

COOKIE_SESSION_FIELD = "api_session"
_UNSET = object()


def open_api_session(user: User) -> ApiSession:
    """Start an API session for ``user`` (a fresh key on every login, as nova does)."""
    api_session = accounts.open_api_session(user, settings().api_session_days)
    # Cookie-keeping clients (client.py, astroquery) then fetch product files as this user;
    # a browser posting here from another site gets no cookie (login CSRF).
    if not cross_site_browser_request():
        session[COOKIE_SESSION_FIELD] = api_session.key
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


# Where an API session (in request-json or the cookie /api/login sets) names the caller:
# nova's API (time-series batches too), the files clients fetch after it, and pages only
# read (a client's private results). Never the site's forms: a cross-site post to
# /api/login (CSRF-exempt, as clients need) could put an attacker's API session in a
# victim's cookie, and it must never make the victim's uploads, tags or comments the
# attacker's (login CSRF).
API_SESSION_BLUEPRINTS = frozenset({"api", "batches", "files"})
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})


def api_session_names_caller() -> bool:
    return request.blueprint in API_SESSION_BLUEPRINTS or request.method in READ_ONLY_METHODS


def cross_site_browser_request() -> bool:
    """A browser sent this on another site's behalf: browsers say so (Sec-Fetch-Site, or
    an Origin that is not this site's); API clients send neither header."""
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    return origin is not None and origin.rstrip("/") != request.host_url.rstrip("/")


def current_user() -> User | None:
    """The caller: a signed-in web user, else (see ``api_session_names_caller``) the API
    session in request-json, else the API session cookie set by /api/login."""
    # Cached on the request itself (not on g, which a test's app context can outlive).
    cached = request.environ.get("nova.user", _UNSET)
    if cached is not _UNSET:
        return cached  # type: ignore[return-value]
    web_user = flask_login.current_user
    user = web_user if web_user and web_user.is_authenticated else None
    if user is None and api_session_names_caller():
        user = session_user(_session_key_in_request_json())
        if user is None:
            user = session_user(session.get(COOKIE_SESSION_FIELD))
    request.environ["nova.user"] = user
    return user


def web_user_for(session_id: str) -> User | None:
    """Flask-Login's user loader: ``<user id>:<session token>`` names a user only while the
    token is the user's current one (sign-out and the like replace it)."""
    user_id, _, token = session_id.partition(":")
    if not (user_id.isascii() and user_id.isdecimal()) or len(user_id) > 18:
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not hmac.compare_digest(token, user.session_token or ""):
        return None
    return user
