"""What every request passes through: the NUL refusal, the security headers, and the
signed-in caller every template sees."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, abort, request
from sqlalchemy.exc import OperationalError

from nova.extensions import db
from nova.web.auth import current_user

# Scripts, styles and pictures come from this site only (no inline script, handler or style
# anywhere); nothing may frame the site but itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)
PERMISSIONS_POLICY = (
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()"
)
# Sent with every answer (unless a view has set its own); nova.web.api.status_polls sends them
# from outside Flask.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Referrer-Policy", "same-origin"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("Permissions-Policy", PERMISSIONS_POLICY),
)


def current_user_is_known() -> bool:
    """Whether this request was answered for a signed-in caller (web or API session)."""
    cached = request.environ.get("nova.user")
    return cached is not None


def inject_user() -> dict[str, Any]:
    try:
        return {"signed_in": current_user()}
    except OperationalError:  # the database is down: the error page still renders
        db.session.rollback()
        return {"signed_in": None}


def refuse_nul_characters() -> None:
    # No text column takes a NUL (PostgreSQL refuses it): a parameter, form field or file
    # name holding one is refused here, before any query sees it.
    if request.method == "OPTIONS":
        return
    texts = [*request.args.keys(), *request.args.values()]
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        texts += [*request.form.keys(), *request.form.values()]
        texts += [file.filename or "" for file in request.files.values()]
    if any("\x00" in text for text in texts):
        abort(400, "A parameter, form field or file name holds a NUL character.")


def security_headers(response: Response) -> Response:
    headers = response.headers
    for name, value in SECURITY_HEADERS:
        headers.setdefault(name, value)
    if current_user_is_known() and "Cache-Control" not in headers:
        # A page or file answered for a signed-in caller may show private data: never
        # kept by a shared cache.
        response.cache_control.private = True
    return response


def register_hooks(app: Flask) -> None:
    app.context_processor(inject_user)
    app.before_request(refuse_nul_characters)
    app.after_request(security_headers)
