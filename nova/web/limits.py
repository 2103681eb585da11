"""Abuse limits: uploads per API key (or per address when anonymous), sign-ins per address,
and failed sign-ins per account and address. Counted in redis by Flask-Limiter, so every
web process and every host shares the same counts.

The limits are attached to the views here, by endpoint, so the views themselves stay about
parsing and authorizing. When redis is down the limits are skipped (uploads must still be
accepted then), never turned into errors.
"""

from __future__ import annotations

import math
import time

from flask import Flask, Response, request
from flask_limiter import Limiter, RequestLimit

from nova.extensions import settings
from nova.infra.metrics import refuse
from nova.web.auth import current_user
from nova.web.errors import refusal

# Endpoints that accept uploads: nova's API and the upload form (POST only).
UPLOAD_ENDPOINTS = ("api.upload", "api.url_upload", "batches.upload_batch", "web.upload")
SIGN_IN_ENDPOINTS = ("api.login", "account.signin", "account.signup")
# What signed-in people post for others to read: counted per account.
CONTENT_ENDPOINTS = ("pages.add_comment", "pages.add_tag", "pages.create_album")


def client_address() -> str:
    # ProxyFix (NOVA_PROXY_HOPS) has already replaced remote_addr by the client's address.
    return request.remote_addr or "unknown"


def caller_key() -> str:
    """Uploads are counted per account (its API key or web session), else per address."""
    user = current_user()
    return f"user:{user.id}" if user is not None else f"ip:{client_address()}"


def account_key() -> str:
    """Failed web sign-ins are counted per account named in the form and per address: a
    guesser is stopped, and a stranger elsewhere cannot lock the owner out."""
    email = (request.form.get("email") or "").strip().lower()
    return f"account:{email}:{client_address()}"


def sign_in_failed(response: Response) -> bool:
    # A failed sign-in shows the form again (200); a successful one redirects.
    return request.method == "POST" and response.status_code == 200


def retry_after_seconds(limit: RequestLimit) -> int:
    # The moving window's reset time is rounded up to the next second: never past the window.
    return max(1, min(math.ceil(limit.reset_at - time.time()), limit.limit.get_expiry()))


def limit_reached(limit: RequestLimit) -> Response:
    """The answer to a request over a limit: nova's JSON envelope on the API, a page else."""
    wait = retry_after_seconds(limit)
    refuse("rate_limited")  # counted when the request was an upload
    if "/account:" in limit.key:  # keys read LIMITER/<prefix>/<key>/<scope>/...
        message = (
            f"Too many failed sign-ins for this account from your address; try again in {wait} s."
        )
    elif request.endpoint in SIGN_IN_ENDPOINTS:
        message = f"Too many sign-in attempts from your address; try again in {wait} s."
    elif request.endpoint in CONTENT_ENDPOINTS:
        message = (
            f"Too many comments, tags or albums (limit: {limit.limit}); try again in {wait} s. "
            "The operator sets this with NOVA_CONTENT_RATE_LIMIT."
        )
    else:
        message = (
            f"Too many uploads (limit: {limit.limit}); try again in {wait} s. "
            "The operator sets this with NOVA_UPLOAD_RATE_LIMIT."
        )
    # nova's clients expect HTTP 200 with {"status": "error"} for every refusal and show
    # the message; some raise on other status codes without reading the body.
    response = refusal(message, 429, api_status=200)
    response.headers["Retry-After"] = str(wait)
    return response


def form_posts_only(endpoint: str) -> list[str] | None:
    """The site's forms are limited when posted (showing them is free); nova's API answers
    GET as well as POST, so both count there."""
    return None if endpoint.startswith("api.") else ["POST"]


def init_limits(app: Flask) -> None:
    """Attach the configured limits to the upload and sign-in views (after registration)."""
    ours = settings(app)
    config = app.config  # Flask-Limiter's own settings, unless a test has set them
    config.setdefault("RATELIMIT_ENABLED", ours.rate_limits)
    config.setdefault("RATELIMIT_STORAGE_URI", ours.redis_url)
    config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"socket_connect_timeout": 1})
    config.setdefault("RATELIMIT_KEY_PREFIX", "nova-limits")
    config.setdefault("RATELIMIT_STRATEGY", "moving-window")
    config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)  # redis down: allow, don't fail
    config.setdefault("RATELIMIT_HEADERS_ENABLED", False)  # nova's clients never read them
    # One limiter per app: its limits are registered per view function, and tests build many
    # apps with different limits in one process.
    limiter = Limiter(key_func=client_address, on_breach=limit_reached)
    limiter.init_app(app)
    app.extensions["nova.limiter"] = limiter  # the extension keeps only a weak reference
    limited_endpoints = set(UPLOAD_ENDPOINTS) | set(SIGN_IN_ENDPOINTS) | set(CONTENT_ENDPOINTS)

    @limiter.request_filter
    def not_limited() -> bool:
        # Only uploads and sign-ins have limits: skip the limiter's bookkeeping on every other
        # request (status polls above all).
        return request.endpoint not in limited_endpoints

    views = app.view_functions
    for endpoint in UPLOAD_ENDPOINTS:
        views[endpoint] = limiter.limit(
            ours.upload_rate_limit,
            key_func=caller_key,
            methods=form_posts_only(endpoint),
            scope="uploads",
        )(views[endpoint])
    for endpoint in CONTENT_ENDPOINTS:
        views[endpoint] = limiter.limit(
            ours.content_rate_limit, key_func=caller_key, methods=["POST"], scope="content"
        )(views[endpoint])
    for endpoint in SIGN_IN_ENDPOINTS:
        limited = limiter.limit(
            ours.login_rate_limit, methods=form_posts_only(endpoint), scope="sign-ins"
        )(views[endpoint])
        if endpoint == "account.signin":
            limited = limiter.limit(
                ours.login_failure_limit,
                key_func=account_key,
                methods=["POST"],
                deduct_when=sign_in_failed,
                scope="failed-sign-ins",
            )(limited)
        views[endpoint] = limited
