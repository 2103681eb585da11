"""Job product files, outside /api/ as on nova, with exact content types."""

from __future__ import annotations

from flask import Blueprint, Response, abort, send_file

from ..extensions import db
from ..models import Job
from ..services import can_view, storage
from ..solver import LOG_NAME, WCS_NAME

bp = Blueprint("files", __name__)


def _visible_job(job_id: int) -> Job:
    job = db.session.get(Job, job_id)
    # A private job answers exactly like a missing one.
    if job is None or not can_view(job.user_image, None):
        abort(404, f"There is no job {job_id}.")
    return job


@bp.route("/wcs_file/<int:job_id>", methods=["GET", "POST"])
def wcs_file(job_id: int) -> Response:
    _visible_job(job_id)
    path = storage().job_file(job_id, WCS_NAME)
    if path is None:
        abort(404, f"Job {job_id} has no WCS file (it is not solved).")
    return send_file(path, mimetype="application/fits", as_attachment=True,
                     download_name="wcs.fits", max_age=3600)  # fmt: skip


@bp.route("/joblog/<int:job_id>", methods=["GET", "POST"])
def joblog(job_id: int) -> Response:
    _visible_job(job_id)
    path = storage().job_file(job_id, LOG_NAME)
    if path is None:
        abort(404, f"Job {job_id} has no log yet.")
    response = send_file(path, mimetype="text/plain", max_age=0)
    return response
