"""The app factory: settings, logging, extensions, then nova.web's blueprints and pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from PIL import Image as PILImage
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, Map

from nova import web
from nova.config import Settings, setting_keys
from nova.db.schema import MIGRATIONS_DIR, tune_sqlite
from nova.engine.params import MAX_ROW_ID
from nova.extensions import SETTINGS_EXTENSION, csrf, db, login_manager, migrate, settings
from nova.infra.storage import Storage
from nova.logs import configure_logging
from nova.services.remember import init_remember
from nova.web.api.status_polls import StatusPolls
from nova.web.forms import QuoteBareBoundaries

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class RowIdConverter(IntegerConverter):
    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ROW_ID)
        super().__init__(url_map, *args, **kwargs)


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Application factory: configuration comes from NOVA_* variables, then ``overrides``."""
    app = Flask(
        __name__,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    overrides = overrides or {}
    ours = setting_keys()
    apply_settings(
        app, Settings.from_env().replace({k: v for k, v in overrides.items() if k in ours})
    )
    app.config.update({k: v for k, v in overrides.items() if k not in ours})
    # Clients call both /api/login and /api/login/: match both, never redirect.
    app.url_map.strict_slashes = False
    # An id in a URL beyond what the database can store names no row: 404, not a 500 from
    # the driver. Registered before the blueprints, so every <int:...> route uses it.
    app.url_map.converters["int"] = RowIdConverter
    configure_logging(app)
    init_extensions(app)
    web.register(app)
    wrap_wsgi(app)
    return app


def apply_settings(app: Flask, new: Settings) -> None:
    """The one way settings reach an app: create_app, and tests that change one."""
    app.extensions[SETTINGS_EXTENSION] = new
    app.config.update(new.flask_config())


def init_extensions(app: Flask) -> None:
    """Storage, the database (tuned, with its migrations), sign-in, remember-me and CSRF."""
    PILImage.MAX_IMAGE_PIXELS = settings(app).max_image_pixels
    store = Storage(settings(app).data_dir)
    store.ensure_dirs()
    app.extensions["nova.infra.storage"] = store
    db.init_app(app)
    with app.app_context():
        tune_sqlite(db.engine)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    login_manager.init_app(app)
    init_remember(app)
    csrf.init_app(app)


def wrap_wsgi(app: Flask) -> None:
    """The middleware around the app: multipart boundaries quoted, bare status polls answered
    from the cache, then the proxy's headers."""
    app.wsgi_app = QuoteBareBoundaries(app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = StatusPolls(app, app.wsgi_app)  # type: ignore[method-assign]
    hops = settings(app).proxy_hops
    if hops:
        # Behind Caddy/nginx: the client's address (rate limits, logs) and https scheme
        # (links, Secure cookies) come from the proxy's X-Forwarded-* headers.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
