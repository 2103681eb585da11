"""The one way a test changes a setting of a running app."""

from __future__ import annotations

from typing import Any

from flask import Flask

from nova.app import apply_settings
from nova.extensions import settings


def change_settings(app: Flask, **changes: Any) -> None:
    """Give ``app`` these settings, named by their Flask keys (``MAX_STARS=10``): its typed
    Settings and Flask's config change together, as ``create_app(overrides)`` sets them."""
    apply_settings(app, settings(app).replace(changes))
