"""Flask extension instances, created unbound and attached in the app factory, and the
typed accessor of the app's settings."""

from __future__ import annotations

from flask import Flask, current_app
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase

from nova.config import Settings

# Where the app keeps its Settings (nova.app.apply_settings puts them there).
SETTINGS_EXTENSION = "nova.settings"


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)

login_manager = LoginManager()
login_manager.login_view = "account.signin"
login_manager.login_message = "Please sign in to do that."
csrf = CSRFProtect()
# render_as_batch: SQLite can only alter a table by copying it, which batch mode does.
migrate = Migrate(render_as_batch=True, compare_type=True)


def settings(app: Flask | None = None) -> Settings:
    """The settings of ``app`` (default: the current app)."""
    return (current_app if app is None else app).extensions[SETTINGS_EXTENSION]
