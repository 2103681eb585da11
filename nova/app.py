"""The app factory: settings, logging, extensions, blueprints, error pages and headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, render_template, request
from flask_wtf.csrf import CSRFError
from PIL import Image as PILImage
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, Map

from nova.config import load_config
from nova.db.schema import MIGRATIONS_DIR, tune_sqlite
from nova.engine.params import MAX_ROW_ID
from nova.extensions import csrf, db, login_manager, migrate
from nova.infra.metrics import init_metrics, refuse
from nova.infra.storage import Storage
from nova.logs import configure_logging
from nova.services.remember import init_remember
from nova.services.submissions import QueueFull
from nova.web.auth import current_user
from nova.web.limits import init_limits

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Scripts, styles and pictures come from this site only (no inline script, handler or style
# anywhere); nothing may frame the site but itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)
PERMISSIONS_POLICY = (
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()"
)


def current_user_is_known() -> bool:
    """Whether this request was answered for a signed-in caller (web or API session)."""
    cached = request.environ.get("nova.user")
    return cached is not None


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
    app.config.update(load_config())
    if overrides:
        app.config.update(overrides)
    # Clients call both /api/login and /api/login/: match both, never redirect.
    app.url_map.strict_slashes = False
    # An id in a URL beyond what the database can store names no row: 404, not a 500 from
    # the driver. Registered before the blueprints, so every <int:...> route uses it.
    app.url_map.converters["int"] = RowIdConverter
    configure_logging(app)

    PILImage.MAX_IMAGE_PIXELS = app.config["MAX_IMAGE_PIXELS"]
    store = Storage(Path(app.config["DATA_DIR"]))
    store.ensure_dirs()
    app.extensions["nova.infra.storage"] = store
    db.init_app(app)
    with app.app_context():
        tune_sqlite(db.engine)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    login_manager.init_app(app)
    init_remember(app)
    csrf.init_app(app)

    from nova.web import account, admin, api, apidocs, batches, browse, events, files, upload
    from nova.web import metrics as metrics_views
    from nova.web.forms import QuoteBareBoundaries

    app.register_blueprint(upload.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(browse.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(batches.bp)
    app.register_blueprint(metrics_views.bp)
    app.register_blueprint(apidocs.bp)
    app.register_blueprint(events.bp)
    # nova's API clients post forms without CSRF tokens; they authenticate by session key.
    csrf.exempt(api.bp)
    init_limits(app)
    init_metrics(app)
    app.wsgi_app = QuoteBareBoundaries(app.wsgi_app)  # type: ignore[method-assign]
    hops = app.config["PROXY_HOPS"]
    if hops:
        # Behind Caddy/nginx: the client's address (rate limits, logs) and https scheme
        # (links, Secure cookies) come from the proxy's X-Forwarded-* headers.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]

    @app.context_processor
    def inject_user() -> dict[str, Any]:
        try:
            return {"signed_in": current_user()}
        except OperationalError:  # the database is down: the error page still renders
            db.session.rollback()
            return {"signed_in": None}

    @app.before_request
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

    @app.after_request
    def security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "SAMEORIGIN")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        if current_user_is_known() and "Cache-Control" not in headers:
            # A page or file answered for a signed-in caller may show private data: never
            # kept by a shared cache.
            response.cache_control.private = True
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> tuple[str, int]:
        refuse("too_large")
        limit = app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
        length = request.content_length
        if length is not None and length <= app.config["MAX_CONTENT_LENGTH"]:
            # The body is within the upload limit: a form field is what is too large.
            field_kb = app.config["MAX_FORM_MEMORY_SIZE"] // 1024
            message = f"A form field is larger than {field_kb:,} kB; files go in file fields."
        else:
            message = f"The upload is larger than the limit of {limit} MB (NOVA_MAX_UPLOAD_MB)."
        if request.path.startswith("/api/"):
            return api.reply({"status": "error", "errormessage": message}, 413)  # type: ignore[return-value]
        return render_template("error.html", code=413, message=message), 413

    @app.errorhandler(QueueFull)
    def queue_full(error: QueueFull) -> tuple[str, int]:
        refuse("queue_full")
        return render_template("error.html", code=429, message=str(error)), 429

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> tuple[str, int]:
        refuse("form_expired")
        message = "The form expired or was not sent by this site; reload the page and try again."
        return render_template("error.html", code=400, message=message), 400

    @app.errorhandler(OperationalError)
    def database_unavailable(error: DBAPIError) -> Any:
        # The database is down or unreachable: the request changed nothing (its transaction
        # is rolled back), and the client may simply try again.
        db.session.rollback()
        app.logger.error("database unavailable: %s", error.orig)
        message = "The database is unavailable just now; please try again in a moment."
        if request.path.startswith("/api/"):
            response = api.reply({"status": "error", "errormessage": message}, 503)
        else:
            response = app.make_response(
                (render_template("error.html", code=503, message=message), 503)
            )
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        if error.response is not None:  # already answered in full (e.g. by a rate limit)
            return error.response
        code = error.code or 500
        if request.path.startswith("/api/"):
            # API clients parse every answer as JSON, errors included.
            return api.reply({"status": "error", "errormessage": error.description}, code)
        return render_template("error.html", code=code, message=error.description), code

    return app
