"""HTTP views: they parse requests and authorise; services change state."""

from __future__ import annotations

from flask import Flask


def register(app: Flask) -> None:
    """Every blueprint, then the limits on their views, the request hooks and error pages."""
    # Imported here: the blueprints import nova.web's other modules, which import this package.
    from nova.extensions import csrf
    from nova.infra.metrics import init_metrics
    from nova.web import account, admin, api, apidocs, batches, browse, events, files, upload
    from nova.web import metrics as metrics_views
    from nova.web.errors import register_error_handlers
    from nova.web.hooks import register_hooks
    from nova.web.limits import init_limits

    for blueprint in (
        upload.bp,
        files.bp,
        api.bp,
        account.bp,
        browse.bp,
        admin.bp,
        batches.bp,
        metrics_views.bp,
        apidocs.bp,
        events.bp,
    ):
        app.register_blueprint(blueprint)
    # nova's API clients post forms without CSRF tokens; they authenticate by session key.
    csrf.exempt(api.bp)
    init_limits(app)
    init_metrics(app)
    register_hooks(app)
    register_error_handlers(app)
