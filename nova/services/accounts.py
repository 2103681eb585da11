"""User accounts and API keys (keys are shown once and stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from nova.db.models import ApiSession, User, utcnow
from nova.extensions import db
from nova.services.remember import forget_all

API_KEY_ALPHABET = string.ascii_lowercase + string.digits  # alphanumeric: clients send it raw
API_KEY_LENGTH = 24


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return "".join(secrets.choice(API_KEY_ALPHABET) for _ in range(API_KEY_LENGTH))


def create_user(email: str, *, display_name: str = "", is_admin: bool = False) -> tuple[User, str]:
    """Create a user; return it with its API key, which is not stored in clear."""
    email = email.strip()
    if "@" not in email or len(email) > 254:
        raise ValueError(f"not an email address: {email!r}")
    if db.session.scalar(select(User).where(User.email == email)) is not None:
        raise ValueError(f"a user with the email {email} already exists")
    key = new_api_key()
    user = User(
        email=email,
        display_name=display_name,
        api_key_hash=hash_api_key(key),
        is_admin=is_admin,
    )
    db.session.add(user)
    db.session.commit()
    return user, key


# An account made on the sign-up page gets its API key at its first sign-in: the sign-up
# answer is the same whether or not the email has an account, so it cannot show a key. Until
# then the hash column holds this prefix and a random tail, which no key's hash (64 hex
# digits) ever equals.
NO_KEY_YET = "no-key-yet:"


def sign_up(email: str, *, display_name: str, password_hash: str) -> None:
    """Make an account with this password unless the email has one (then change nothing).
    Says nothing about which happened: the sign-up page must not (account enumeration)."""
    if db.session.scalar(select(User.id).where(User.email == email)) is not None:
        return
    db.session.add(
        User(
            email=email,
            display_name=display_name,
            api_key_hash=NO_KEY_YET + secrets.token_hex(16),
            password_hash=password_hash,
        )
    )
    try:
        db.session.commit()
    except IntegrityError:  # the same email signed up at the same moment
        db.session.rollback()


def first_api_key(user: User) -> str | None:
    """The API key of an account signing in for the first time since signing up on the
    site (made now, shown once); None if it has a key already. Commits."""
    if not user.api_key_hash.startswith(NO_KEY_YET):
        return None
    key = new_api_key()
    user.api_key_hash = hash_api_key(key)
    db.session.commit()
    return key


def user_for_api_key(key: str) -> User | None:
    return db.session.scalar(select(User).where(User.api_key_hash == hash_api_key(key)))


def revoke_sessions(user: User) -> int:
    """End every session of ``user`` at once: API sessions and remember tokens are deleted,
    and a new session token makes every web session (they name the old one) worthless.
    Returns how many API sessions ended. Commits."""
    ended = db.session.execute(delete(ApiSession).where(ApiSession.user_id == user.id)).rowcount
    forget_all(user)
    user.session_token = secrets.token_urlsafe(32)
    db.session.commit()
    return int(ended or 0)


def reset_api_key(email: str) -> str:
    """Replace a user's API key; return the new one. The old key stops working at once, and
    so does every session, API or web, opened before (see ``revoke_sessions``)."""
    user = db.session.scalar(select(User).where(User.email == email.strip()))
    if user is None:
        raise ValueError(f"no user with the email {email}")
    key = new_api_key()
    user.api_key_hash = hash_api_key(key)
    revoke_sessions(user)
    return key


# API session keys are alphanumeric ASCII, as nova's clients expect (nova-clients.md).
SESSION_KEY_ALPHABET = string.ascii_lowercase + string.digits
SESSION_KEY_LENGTH = 32


def open_api_session(user: User, days: int) -> ApiSession:
    """Start an API session for ``user``, valid ``days`` (a fresh key every time). Commits."""
    key = "".join(secrets.choice(SESSION_KEY_ALPHABET) for _ in range(SESSION_KEY_LENGTH))
    api_session = ApiSession(key=key, user=user, expires_at=utcnow() + timedelta(days=days))
    db.session.add(api_session)
    db.session.commit()
    return api_session


def record_sign_in(user: User) -> None:
    """Note when ``user`` last signed in on the site. Commits."""
    user.last_login = utcnow()
    db.session.commit()


def change_password(user: User, password_hash: str) -> None:
    """Store the new password and end every session of ``user`` (revoke_sessions). Commits."""
    user.password_hash = password_hash
    revoke_sessions(user)


def save_profile(
    user: User,
    *,
    display_name: str,
    default_visibility: str,
    default_commercial_use: str,
    default_modifications: str,
) -> None:
    """Store the profile form's fields: the name shown and the defaults for new uploads. Commits."""
    user.display_name = display_name
    user.default_visibility = default_visibility
    user.default_commercial_use = default_commercial_use
    user.default_modifications = default_modifications
    db.session.commit()
