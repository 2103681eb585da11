"""Accounts for people: sign up, sign in and out, profile, API key."""

from __future__ import annotations

import functools
import secrets
from typing import Any
from urllib.parse import urlsplit

import flask_login
from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp

from nova.db.models import User
from nova.extensions import db, login_manager
from nova.services import accounts, webhooks
from nova.services.accounts import first_api_key, reset_api_key, revoke_sessions, sign_up
from nova.services.remember import forget, remember
from nova.web.auth import COOKIE_SESSION_FIELD, web_user_for

bp = Blueprint("account", __name__)
SIGN_IN_EMAIL_FIELD = "sign_in_email"  # in the session: the sign-in form starts with it

VISIBILITY_CHOICES = [("y", "public: anyone can see my images"), ("n", "private: only me")]
COMMERCIAL_CHOICES = [("y", "allow commercial use"), ("n", "no commercial use")]
MODIFICATION_CHOICES = [
    ("y", "allow modifications"),
    ("sa", "allow if shared alike"),
    ("n", "no modifications"),
]


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    return web_user_for(session_id)


# Syntax only: no DNS look-ups (the server may have no outside network).
EMAIL = Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message="Enter an email address.")


class SignUpForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), EMAIL, Length(max=254)])
    display_name = StringField("Display name", validators=[Length(max=100)])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=200)])
    confirm = PasswordField(
        "Repeat password", validators=[EqualTo("password", "The passwords differ.")]
    )


class SignInForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), EMAIL])
    password = PasswordField("Password", validators=[DataRequired()])


class ProfileForm(FlaskForm):
    display_name = StringField("Display name", validators=[Length(max=100)])
    default_visibility = SelectField("New images are", choices=VISIBILITY_CHOICES)
    default_commercial_use = SelectField("Licence: commercial use", choices=COMMERCIAL_CHOICES)
    default_modifications = SelectField("Licence: modifications", choices=MODIFICATION_CHOICES)


def _safe_next(default: str) -> str:
    r"""The ``next`` page after sign-in: a path on this site only, never another site.

    Browsers drop tabs and newlines from URLs and read a backslash as a slash, so
    ``/\t/evil.example`` and ``/\evil.example`` lead off-site: any control character,
    space or backslash refuses the target, as does anything with a scheme or host.
    """
    target = request.args.get("next", "")
    if not target.startswith("/") or any(c <= " " or c in "\\\x7f" for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return default
    return target


def signed_in_user() -> User:
    """The signed-in user itself (not Flask-Login's proxy, which cannot be signed in anew)."""
    return flask_login.current_user._get_current_object()  # type: ignore[no-any-return]


@functools.cache
def _decoy_hash() -> str:
    """A hash of a random password with the same method as real ones, to check against."""
    return generate_password_hash(secrets.token_hex(16))


@bp.route("/signup", methods=["GET", "POST"])
def signup() -> Any:
    """One answer whether or not the email has an account (no account enumeration): the
    password is hashed either way, and the browser is sent to sign in. A new account works
    with the password just chosen, and its first sign-in shows its API key; an existing
    account is left as it was, so its owner signs in with their own password."""
    form = SignUpForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        sign_up(
            email,
            display_name=(form.display_name.data or "").strip(),
            password_hash=generate_password_hash(form.password.data),
        )
        session[SIGN_IN_EMAIL_FIELD] = email
        flash(
            "Sign in with the password you chose. (If this email already had an account, "
            "nothing about it changed: sign in with its own password.)"
        )
        return redirect(url_for("account.signin"))
    return render_template("account/signup.html", form=form)


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    form = SignInForm()
    if request.method == "GET" and not form.email.data:
        form.email.data = session.pop(SIGN_IN_EMAIL_FIELD, None)  # just signed up
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        user = db.session.scalar(select(User).where(User.email == email))
        # Hash the password whether or not the account exists: the answer takes as long for
        # an unknown email as for a wrong password (no account enumeration by timing).
        stored = user.password_hash if user is not None and user.password_hash else None
        matches = check_password_hash(stored or _decoy_hash(), form.password.data)
        if stored is None or not matches:
            form.password.errors.append("Wrong email or password.")
        else:
            sign_in_here(user)
            accounts.record_sign_in(user)
            key = first_api_key(user)
            if key is not None:
                return render_template(
                    "account/api_key.html",
                    key=key,
                    new_account=True,
                    webhook_secret=webhooks.user_secret(user),
                )
            return redirect(_safe_next(url_for("pages.dashboard")))
    return render_template("account/signin.html", form=form)


def sign_in_here(user: User) -> None:
    """Sign this browser in as ``user``, remembered for REMEMBER_DAYS (nova.services.remember)."""
    flask_login.login_user(user)
    remember(user)


@bp.post("/signout")
def signout() -> Response:
    """Sign out everywhere: every web session, remember cookie and API session of the user
    ends (a copy of this browser's cookie signs nobody in afterwards)."""
    if flask_login.current_user.is_authenticated:
        revoke_sessions(signed_in_user())
    flask_login.logout_user()
    forget()
    session.pop(COOKIE_SESSION_FIELD, None)
    flash("You are signed out.")
    return redirect(url_for("web.upload_page"))


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired()])
    password = PasswordField("New password", validators=[DataRequired(), Length(min=8, max=200)])
    confirm = PasswordField(
        "Repeat new password", validators=[EqualTo("password", "The passwords differ.")]
    )


@bp.route("/dashboard/password", methods=["GET", "POST"])
@flask_login.login_required
def change_password() -> Any:
    """A new password ends every other session (web and API); this browser stays signed in."""
    user = signed_in_user()
    form = PasswordForm()
    if form.validate_on_submit():
        if not user.password_hash or not check_password_hash(user.password_hash, form.current.data):
            form.current.errors.append("That is not your current password.")
        else:
            accounts.change_password(user, generate_password_hash(form.password.data))
            sign_in_here(user)  # with the new session token
            flash("Password changed; every other session is signed out.")
            return redirect(url_for("account.profile"))
    return render_template("account/password.html", form=form)


@bp.route("/dashboard/profile", methods=["GET", "POST"])
@flask_login.login_required
def profile() -> Any:
    user: User = flask_login.current_user  # type: ignore[assignment]
    form = ProfileForm(obj=user)
    if form.validate_on_submit():
        accounts.save_profile(
            user,
            display_name=form.display_name.data.strip(),
            default_visibility=form.default_visibility.data,
            default_commercial_use=form.default_commercial_use.data,
            default_modifications=form.default_modifications.data,
        )
        flash("Profile saved.")
        return redirect(url_for("account.profile"))
    return render_template(
        "account/profile.html",
        form=form,
        api_url=request.url_root.rstrip("/") + "/api/",
        webhook_secret=webhooks.user_secret(user),
    )


@bp.post("/dashboard/api_key")
@flask_login.login_required
def regenerate_api_key() -> Any:
    user = signed_in_user()
    key = reset_api_key(user.email)  # ends every session, this one too...
    sign_in_here(user)  # ...which continues with the new token
    current_app.logger.info("user %s regenerated their API key", user.id)
    return render_template(
        "account/api_key.html",
        key=key,
        new_account=False,
        webhook_secret=webhooks.user_secret(user),
    )
