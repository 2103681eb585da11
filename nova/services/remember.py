"""Remember-me cookies that rotate: each signs its browser in once, and that sign-in hands
the browser a new cookie, so a copied cookie stops working as soon as either copy is used.

The cookie holds ``<selector>.<validator>``: the selector names a RememberToken row, the
validator is checked against its stored SHA-256 (a database dump signs nobody in).
Sign-out, a new password and a new API key delete every row of the account
(``accounts.revoke_sessions``). Flask-Login's own remember cookie is not used: it names the
account, not the browser, so it could not be replaced on use without ending every other
browser's cookie too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

import flask_login
from flask import Flask, Response, request
from sqlalchemy import delete

from nova.db.models import RememberToken, User, utcnow
from nova.extensions import db, settings

COOKIE_NAME = "NovaRemember"
REMEMBER_DAYS = 365
# request.environ: the cookie value this answer sets, or None to clear
_SET = "nova.services.remember.set"


def _hash(validator: str) -> str:
    return hashlib.sha256(validator.encode()).hexdigest()


def remember(user: User) -> None:
    """Give this browser a new remember cookie for ``user`` (set on the answer). Commits."""
    selector, validator = secrets.token_hex(16), secrets.token_urlsafe(32)
    now = utcnow()
    # The account's expired tokens go whenever it gets a new one.
    db.session.execute(
        delete(RememberToken).where(
            RememberToken.user_id == user.id, RememberToken.expires_at < now
        )
    )
    db.session.add(
        RememberToken(
            selector=selector,
            validator_hash=_hash(validator),
            user_id=user.id,
            expires_at=now + timedelta(days=REMEMBER_DAYS),
        )
    )
    db.session.commit()
    request.environ[_SET] = f"{selector}.{validator}"


def forget() -> None:
    """Clear this browser's remember cookie (the rows are revoke_sessions' to delete)."""
    request.environ[_SET] = None


def forget_all(user: User) -> None:
    """Delete every remember token of ``user``; the caller commits."""
    db.session.execute(delete(RememberToken).where(RememberToken.user_id == user.id))


def _redeem(cookie: str) -> User | None:
    """The user a remember cookie names, its token used up; None if it names none."""
    selector, _, validator = cookie.partition(".")
    if not (selector.isascii() and selector.isalnum()) or len(selector) != 32 or not validator:
        return None
    token = db.session.get(RememberToken, selector)
    if token is None or token.expires_at < utcnow():
        return None
    if not hmac.compare_digest(token.validator_hash, _hash(validator)):
        return None
    user_id, validator_hash = token.user_id, token.validator_hash
    # Deleted only if still there: of two requests racing with one cookie, one signs in.
    used = db.session.execute(
        delete(RememberToken).where(
            RememberToken.selector == selector,
            RememberToken.validator_hash == validator_hash,
        )
    ).rowcount
    db.session.commit()
    return db.session.get(User, user_id) if used == 1 else None


def sign_in_from_cookie() -> None:
    """before_request: a browser without a web session but with a remember cookie is signed
    in with it, and gets a new cookie in the answer; a cookie that names nobody is cleared."""
    cookie = request.cookies.get(COOKIE_NAME)
    if not cookie or flask_login.current_user.is_authenticated:
        return
    user = _redeem(cookie)
    if user is None:
        forget()
        return
    flask_login.login_user(user)
    remember(user)


def set_cookie(response: Response) -> Response:
    """after_request: what remember() or forget() decided for this answer."""
    if _SET not in request.environ:
        return response
    value = request.environ[_SET]
    if value is None:
        response.delete_cookie(COOKIE_NAME, httponly=True, samesite="Lax")
    else:
        response.set_cookie(
            COOKIE_NAME,
            value,
            max_age=REMEMBER_DAYS * 24 * 3600,
            httponly=True,
            samesite="Lax",
            secure=settings().secure_cookies,
        )
    return response


def init_remember(app: Flask) -> None:
    # Flask-Login looks for its own remember cookie under this name: it finds ours, cannot
    # decode it (no signature in its format) and so never signs anyone in with it.
    app.config["REMEMBER_COOKIE_NAME"] = COOKIE_NAME
    app.before_request(sign_in_from_cookie)
    app.after_request(set_cookie)
