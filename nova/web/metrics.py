"""``/metrics``: Prometheus' text format, when NOVA_METRICS is on (404 otherwise), and only
for a scraper sending the bearer token when NOVA_METRICS_TOKEN is set (401 otherwise)."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, abort, request

from nova.extensions import settings
from nova.infra import metrics
from nova.services import jobs

bp = Blueprint("metrics", __name__)
# The text format every Prometheus version reads (the names are all plain ASCII, so the
# newer 1.0.0 format would be the same text).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def _token_matches(expected: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Compared in constant time: the answer's timing tells nothing of the token.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.encode()
    )


@bp.get("/metrics")
def scrape() -> Response:
    config = settings()
    if not config.metrics:
        abort(404)
    token = config.metrics_token
    if token and not _token_matches(token):
        response = Response("A bearer token is needed (NOVA_METRICS_TOKEN).\n", status=401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response.mimetype = "text/plain"
        return response
    response = Response(metrics.exposition(jobs.unfinished_job_counts), content_type=TEXT_FORMAT)
    response.headers["Cache-Control"] = "no-store"
    return response
