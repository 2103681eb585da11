"""Job product files, outside /api/ as on nova, with exact content types.

No human check and no Referer requirement: API clients fetch these directly. Private jobs
are served to their owner only (API session cookie from /api/login); to anyone else they
answer exactly like a job that does not exist.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, send_file

from ..auth import current_user
from ..extensions import db
from ..inputs import PreparedInput, UnsupportedInput
from ..models import Job
from ..products import PRODUCTS, ProductUnavailable, product_path
from ..services import can_view, prepare_image, storage
from ..solver import AXY_NAME, CORR_NAME, LOG_NAME, RDLS_NAME, WCS_NAME

bp = Blueprint("files", __name__)
ANY_METHOD = ["GET", "POST"]
FITS = "application/fits"


def visible_job(job_id: int) -> Job:
    job = db.session.get(Job, job_id)
    if job is None or not can_view(job.user_image, current_user()):
        abort(404, f"There is no job {job_id}.")
    return job


def send_product(job_id: int, name: str, download_name: str, mimetype: str) -> Response:
    visible_job(job_id)
    path = storage().job_file(job_id, name)
    if path is None:
        abort(404, f"Job {job_id} has no {download_name}.")
    # Products never change once published (a re-solve gets a new job id).
    return send_file(
        path, mimetype=mimetype, as_attachment=True, download_name=download_name, max_age=86400
    )


@bp.route("/wcs_file/<int:job_id>", methods=ANY_METHOD)
def wcs_file(job_id: int) -> Response:
    return send_product(job_id, WCS_NAME, "wcs.fits", FITS)


@bp.route("/rdls_file/<int:job_id>", methods=ANY_METHOD)
def rdls_file(job_id: int) -> Response:
    return send_product(job_id, RDLS_NAME, "rdls.fits", FITS)


@bp.route("/axy_file/<int:job_id>", methods=ANY_METHOD)
def axy_file(job_id: int) -> Response:
    return send_product(job_id, AXY_NAME, "axy.fits", FITS)


@bp.route("/corr_file/<int:job_id>", methods=ANY_METHOD)
def corr_file(job_id: int) -> Response:
    return send_product(job_id, CORR_NAME, "corr.fits", FITS)


def send_derived(job_id: int, name: str) -> Response:
    """A product built from the solution on first request (then served from its file)."""
    job = visible_job(job_id)
    product = PRODUCTS[name]
    store = storage()
    work_dirs: list[Path] = []

    def prepare() -> PreparedInput:
        work_dirs.append(store.make_work_dir(f"product-{job_id}-"))
        return prepare_image(job.user_image, work_dirs[-1])

    try:
        path = product_path(job, store.job_dir(job_id), product, prepare)
    except ProductUnavailable as exc:
        abort(404, str(exc))
    except (OSError, ValueError, UnsupportedInput) as exc:
        abort(500, f"Could not build {product.download_name}: {exc}")
    finally:
        for work_dir in work_dirs:
            store.discard(work_dir)
    return send_file(
        path,
        mimetype=product.mimetype,
        as_attachment=True,
        download_name=product.download_name,
        max_age=86400,
    )


@bp.route("/new_fits_file/<int:job_id>", methods=ANY_METHOD)
def new_fits_file(job_id: int) -> Response:
    return send_derived(job_id, "new_fits_file")


@bp.route("/image_rd_file/<int:job_id>", methods=ANY_METHOD)
def image_rd_file(job_id: int) -> Response:
    return send_derived(job_id, "image_rd_file")


@bp.route("/joblog/<int:job_id>", methods=ANY_METHOD)
def joblog(job_id: int) -> Response:
    visible_job(job_id)
    path = storage().job_file(job_id, LOG_NAME)
    if path is None:
        abort(404, f"Job {job_id} has no log yet.")
    return send_file(path, mimetype="text/plain", max_age=0)
