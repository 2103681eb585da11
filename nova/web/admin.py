"""The operator page: queues, workers, failures, jobs that may be lost, and index files.

Only admin users see it; everyone else gets the same 404 as for a page that does not exist.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import Blueprint, abort, jsonify, render_template
from redis.exceptions import RedisError
from sqlalchemy import func, or_, select
from werkzeug.wrappers import Response

from nova.db.models import Job, JobStatus, utcnow
from nova.engine import indexes
from nova.extensions import db, settings
from nova.infra.queue_overview import QueueInfo, WorkerInfo, queue_infos, worker_infos
from nova.web.auth import current_user

bp = Blueprint("admin", __name__, url_prefix="/admin")
RECENT_FAILURES = 20


@bp.before_request
def admins_only() -> None:
    user = current_user()
    if user is None or not user.is_admin:
        abort(404)  # the same answer as for a page that does not exist


def redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def recent_failures(limit: int = RECENT_FAILURES) -> list[Job]:
    newest = Job.finished_at.desc()  # ids are random
    query = select(Job).where(Job.status == JobStatus.FAILURE).order_by(newest).limit(limit)
    return list(db.session.scalars(query))


def stuck_jobs() -> list[Job]:
    """Jobs solving for longer than the time limit: their worker probably died (lost)."""
    limit = timedelta(seconds=settings().solve_time_limit)
    query = (
        select(Job)
        .where(Job.status == JobStatus.SOLVING)
        .where(or_(Job.started_at.is_(None), Job.started_at < utcnow() - limit))
        .order_by(Job.started_at)
    )
    return list(db.session.scalars(query))


def job_counts() -> dict[str, int]:
    rows = db.session.execute(select(Job.status, func.count()).group_by(Job.status))
    counts = {str(status): 0 for status in JobStatus}
    counts.update({str(status): int(count) for status, count in rows})
    return counts


def index_scan() -> indexes.IndexScan:
    return indexes.scan_index_dirs(settings().index_dirs)


@bp.get("/")
def overview() -> Any:
    redis_error = None
    queues: list[QueueInfo] = []
    workers: list[WorkerInfo] = []
    try:
        queues = queue_infos()
        workers = worker_infos()
    except RedisError as exc:
        redis_error = f"redis does not answer at {redacted(settings().redis_url)}: {exc}"
    scan = index_scan()
    return render_template(
        "admin/index.html",
        now=utcnow(),
        redis_error=redis_error,
        queues=queues,
        workers=workers,
        counts=job_counts(),
        failures=recent_failures(),
        stuck=stuck_jobs(),
        time_limit=settings().solve_time_limit,
        index_dirs=settings().index_dirs,
        scan=scan,
        bands=indexes.coverage(scan),
        summary=indexes.summary(scan),
        format_degrees=indexes.format_degrees,
    )


@bp.get("/indexes")
def indexes_json() -> Response:
    data = indexes.scan_as_json(index_scan())
    data["directories"] = [str(d) for d in settings().index_dirs]
    response = jsonify(data)
    response.headers["Cache-Control"] = "no-store"
    return response
