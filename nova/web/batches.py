"""Time series: ``/api/upload_batch``, ``/api/batches/B`` (+ ``calibrations.csv``),
``/batch_wcs/B`` and the batch page ``/batches/B``.

The API endpoints follow nova's conventions (request-json, text/plain JSON, errors as
HTTP 200 envelopes, missing or private ids as a JSON 404); see ``views.api``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from nova.db.batch_models import Batch
from nova.engine.params import _bool
from nova.extensions import csrf, settings
from nova.infra.metrics import refuse
from nova.services import batches, storage
from nova.web import api
from nova.web.auth import current_user
from nova.web.errors import api_refusal
from nova.web.forms import save_files

bp = Blueprint("batches", __name__)
bp.register_error_handler(api.ApiError, api.api_error)
ANY_METHOD = ["GET", "POST"]
# Form parts besides the frames (request-json, and what a client may add).
SPARE_FORM_PARTS = 100


@bp.before_app_request
def batch_request_limits() -> Response | None:
    """A batch request may hold more parts and bytes than an upload: its own limits apply,
    set before anything (the rate limiter's key) reads the form. Runs before every other
    hook because this blueprint is registered before the limiter."""
    if request.endpoint != "batches.upload_batch":
        return None
    config = settings()
    request.max_content_length = config.batch_max_bytes
    request.max_form_parts = config.batch_max_frames + SPARE_FORM_PARTS
    try:
        request.form  # noqa: B018 -- parse now, so that a refusal is nova's error envelope
    except RequestEntityTooLarge:
        refuse("too_large")
        limit = config.batch_max_bytes // (1024 * 1024)
        return api_refusal(
            f"the batch is larger than {limit} MB (NOVA_BATCH_MAX_MB) or "
            f"has more than {config.batch_max_frames} frames (NOVA_BATCH_MAX_FRAMES)"
        )
    return None


@bp.route("/api/upload_batch", methods=["POST"])
@csrf.exempt
def upload_batch() -> Response:
    args = api.json_args()
    user = api.require_login(args)
    options = api.upload_options(args, user)
    try:
        chain = _bool("chain", args.get("chain"))
    except ValueError:
        refuse("invalid_argument")
        api.fail("invalid chain: must be true or false")
    files = request.files.getlist("file")
    try:
        batches.check_frame_count(len(files))
    except batches.BatchRefused as exc:
        refuse("frame_count")
        api.fail(str(exc))
    work_dir = storage().make_work_dir("batch-")
    try:
        paths = save_files(files, work_dir, "frame-")
        batch, submissions = batches.create_batch(
            paths, options, chain=True if chain is None else chain
        )
    finally:
        storage().discard(work_dir)
    return api.reply(
        {"status": "success", "batch": batch.id, "subids": [s.id for s in submissions]}
    )


def _visible_batch(batch_id: int) -> Batch:
    batch = batches.visible_batch(batch_id, current_user())
    if batch is None:
        raise api.ApiError("batch does not exist", 404)
    return batch


@bp.route("/api/batches/<int:batch_id>", methods=ANY_METHOD)
@csrf.exempt
def batch_status(batch_id: int) -> Response:
    return api.reply(batches.batch_state(_visible_batch(batch_id)))


@bp.route("/api/batches/<int:batch_id>/calibrations.csv", methods=ANY_METHOD)
@csrf.exempt
def batch_calibrations(batch_id: int) -> Response:
    batch = _visible_batch(batch_id)
    return Response(
        batches.calibrations_csv(batch),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="batch-{batch.id}.csv"'},
    )


@bp.route("/batch_wcs/<int:batch_id>", methods=ANY_METHOD)
@csrf.exempt
def batch_wcs(batch_id: int) -> Response:
    batch = batches.visible_batch(batch_id, current_user())
    if batch is None:
        abort(404, f"There is no batch {batch_id}.")
    response = Response(
        batches.wcs_zip(batch),
        content_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="batch-{batch.id}-wcs.zip"'},
    )
    response.cache_control.private = batch.publicly_visible != "y"
    response.cache_control.no_cache = True  # frames are still being solved
    return response


@bp.get("/batches/<int:batch_id>")
def batch_page(batch_id: int) -> Any:
    batch = batches.visible_batch(batch_id, current_user())
    if batch is None:
        abort(404, f"There is no batch {batch_id}.")
    return render_template("batch.html", batch=batch, state=batches.batch_state(batch))
