"""Accounts for people: sign up, sign in and out, profile, API key."""

from __future__ import annotations

from typing import Any

import flask_login
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response
from wtforms import EmailField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp

from ..accounts import create_user, reset_api_key
from ..extensions import db, login_manager
from ..models import User, utcnow

bp = Blueprint("account", __name__)

VISIBILITY_CHOICES = [("y", "public: anyone can see my images"), ("n", "private: only me")]
COMMERCIAL_CHOICES = [("y", "allow commercial use"), ("n", "no commercial use")]
MODIFICATION_CHOICES = [
    ("y", "allow modifications"),
    ("sa", "allow if shared alike"),
    ("n", "no modifications"),
]


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id)) if user_id.isdigit() else None


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
    target = request.args.get("next", "")
    # Only local paths: never redirect a sign-in to another site.
    return target if target.startswith("/") and not target.startswith("//") else default


@bp.route("/signup", methods=["GET", "POST"])
def signup() -> Any:
    form = SignUpForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        if db.session.scalar(select(User).where(User.email == email)) is not None:
            form.email.errors.append("An account with this email exists; sign in instead.")
        else:
            user, key = create_user(email, display_name=form.display_name.data.strip())
            user.password_hash = generate_password_hash(form.password.data)
            db.session.commit()
            flask_login.login_user(user)
            return render_template("account/api_key.html", key=key, new_account=True)
    return render_template("account/signup.html", form=form)


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    form = SignInForm()
    if form.validate_on_submit():
        email = form.email.data.strip().lower()
        user = db.session.scalar(select(User).where(User.email == email))
        if (
            user is None
            or not user.password_hash
            or not check_password_hash(user.password_hash, form.password.data)
        ):
            form.password.errors.append("Wrong email or password.")
        else:
            flask_login.login_user(user, remember=True)
            user.last_login = utcnow()
            db.session.commit()
            return redirect(_safe_next(url_for("pages.dashboard")))
    return render_template("account/signin.html", form=form)


@bp.post("/signout")
def signout() -> Response:
    flask_login.logout_user()
    flash("You are signed out.")
    return redirect(url_for("web.upload_page"))


@bp.route("/dashboard/profile", methods=["GET", "POST"])
@flask_login.login_required
def profile() -> Any:
    user: User = flask_login.current_user  # type: ignore[assignment]
    form = ProfileForm(obj=user)
    if form.validate_on_submit():
        user.display_name = form.display_name.data.strip()
        user.default_visibility = form.default_visibility.data
        user.default_commercial_use = form.default_commercial_use.data
        user.default_modifications = form.default_modifications.data
        db.session.commit()
        flash("Profile saved.")
        return redirect(url_for("account.profile"))
    return render_template(
        "account/profile.html", form=form, api_url=request.url_root.rstrip("/") + "/api/"
    )


@bp.post("/dashboard/api_key")
@flask_login.login_required
def regenerate_api_key() -> Any:
    user: User = flask_login.current_user  # type: ignore[assignment]
    key = reset_api_key(user.email)
    current_app.logger.info("user %s regenerated their API key", user.id)
    return render_template("account/api_key.html", key=key, new_account=False)
