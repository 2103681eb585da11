"""Pages for people: upload, live submission status, the result of a solve."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from redis.exceptions import RedisError
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response as BaseResponse

from nova.db.models import Album, Job, Submission, UserImage
from nova.engine import hints
from nova.engine.calibration import format_dec_dms, format_ra_hms, format_size
from nova.engine.input_formats import UnsupportedInput
from nova.engine.params import (
    FLAG_FIELDS,
    VALUE_FIELDS,
    ParamError,
    parse_choice,
    parse_solve_params,
    row_id,
)
from nova.extensions import db, settings
from nova.infra import jobqueue
from nova.infra.metrics import refuse
from nova.services import access, batches, gallery, jobs, storage, submissions, webhooks
from nova.services.status import job_progress
from nova.web import licences
from nova.web.auth import current_user
from nova.web.forms import save_files
from nova.web.limits import client_address

bp = Blueprint("web", __name__)

FORM_FIELDS = VALUE_FIELDS
# Checkboxes; use_header_hints is asked the other way round (ignore_header_hints).
FORM_FLAGS = tuple(name for name in FLAG_FIELDS if name != "use_header_hints")
# nova's scale presets (field width in degrees, lower and upper bound).
SCALE_PRESETS = {
    "any": (0.1, 180.0),
    "wide": (1.0, 180.0),
    "very-wide": (10.0, 180.0),
    "tiny": (0.0333, 0.1667),
}
LOG_TAIL_LINES = 20


def _form_params() -> dict[str, Any]:
    values: dict[str, Any] = {name: request.form.get(name, "") for name in FORM_FIELDS}
    for flag in FORM_FLAGS:
        values[flag] = "true" if request.form.get(flag) else "false"
    # A checkbox that is off sends nothing: the form asks the opposite question.
    values["use_header_hints"] = "false" if request.form.get("ignore_header_hints") else "true"
    preset = SCALE_PRESETS.get(request.form.get("scale_preset", ""))
    if request.form.get("scale_hint") == "on":
        preset = None  # custom: the unit, type and bound fields below apply
    elif preset is None:
        preset = SCALE_PRESETS["any"]
    if preset is not None:
        # nova's presets: degrees wide, lower/upper bounds; the custom fields are ignored.
        values.update(
            scale_units="degwidth",
            scale_type="ul",
            scale_est="",
            scale_err="",
            scale_lower=str(preset[0]),
            scale_upper=str(preset[1]),
        )
    return values


def _submission_options(params: Any, user: Any) -> submissions.SubmissionOptions:
    """Visibility, licence and album from the form; anonymous uploads are public (as nova)."""
    if user is None:
        return submissions.SubmissionOptions(params=params, client_address=client_address())
    form = request.form
    album = None
    if form.get("album_id"):
        # isdigit() admits "²" and other digits int() refuses: only ASCII decimals are ids.
        text = form["album_id"].strip()
        key = row_id(int(text)) if text.isascii() and text.isdecimal() else None
        album = db.session.get(Album, key) if key is not None else None
        if album is None or album.user_id != user.id:
            raise ParamError("album", "choose one of your own albums")
    return submissions.SubmissionOptions(
        params=params,
        user=user,
        publicly_visible=parse_choice(
            "publicly_visible", form.get("publicly_visible"), ("y", "n"), user.default_visibility
        ),
        allow_commercial_use=parse_choice(
            "allow_commercial_use", form.get("allow_commercial_use"), ("y", "n", "d"), "d"
        ),
        allow_modifications=parse_choice(
            "allow_modifications", form.get("allow_modifications"), ("y", "sa", "n", "d"), "d"
        ),
        album=album,
    )


def _form_callback_url() -> str | None:
    """The advanced form's webhook address (nova.services.webhooks), or None when left empty."""
    value = request.form.get("callback_url", "").strip()
    if not value:
        return None
    try:
        return webhooks.check_callback_url(value)
    except ValueError as exc:
        reason = str(exc).removeprefix("The callback_url ").rstrip(".")
        raise ParamError("callback_url", reason) from None


def _upload_form(error: str | None = None, field: str | None = None, status: int = 200) -> Any:
    user = current_user()
    albums = []
    if user is not None:
        albums = db.session.scalars(
            select(Album).where(Album.user_id == user.id).order_by(Album.title)
        ).all()
    return render_template(
        "upload.html", error=error, error_field=field, form=request.form, user=user, albums=albums
    ), status


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness for load balancers and container healthchecks: database and redis answer."""
    checks = {"database": "ok", "redis": "ok"}
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        jobqueue.redis_connection().ping()
    except RedisError as exc:
        checks["redis"] = f"error: {exc.__class__.__name__}"
    healthy = all(value == "ok" for value in checks.values())
    response = jsonify({"status": "ok" if healthy else "unavailable", **checks})
    response.status_code = 200 if healthy else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
@bp.get("/upload")
def upload_page() -> Any:
    return _upload_form()


@bp.post("/upload")
def upload() -> BaseResponse | Any:
    user = current_user()
    if user is None and not settings().allow_anonymous_uploads:
        refuse("not_signed_in")
        return _upload_form(
            "Sign in to upload: this server does not take anonymous uploads.", "file", 403
        )
    try:
        params = parse_solve_params(_form_params())
        options = replace(_submission_options(params, user), callback_url=_form_callback_url())
    except ParamError as exc:
        refuse("invalid_argument")
        label = exc.field.replace("_", " ")
        return _upload_form(f"Invalid {label}: {exc.message}.", exc.field, 400)
    files = [file for file in request.files.getlist("file") if file.filename]
    url = request.form.get("url", "").strip()
    time_series = bool(request.form.get("time_series")) and len(files) > 1
    if files:
        answer = _submit_files(files, options, time_series)
        if not isinstance(answer, Submission):
            return answer  # the form again, or the batch's page
        submission = answer
    elif url:
        try:
            url = submissions.validate_url(url)
        except ValueError as exc:
            refuse("invalid_url")
            return _upload_form(str(exc), "url", 400)
        submission = submissions.submit_url(url, options)
    else:
        refuse("no_input")
        return _upload_form("Choose a file to upload or enter a URL.", "file", 400)
    if submission.callback_secret:
        # An anonymous upload's webhook key: told once, here, to whoever uploaded it.
        flash(
            f"The webhooks of this upload are signed with the secret {submission.callback_secret}"
            " (X-Nova-Signature); keep it, it is not shown again.",
            "notice",
        )
    return redirect(url_for("web.status", submission_id=submission.id), code=303)


def _submit_files(
    files: list[FileStorage], options: submissions.SubmissionOptions, time_series: bool
) -> Submission | Any:
    """The uploaded files as one submission (or a time series batch: its page), or the form
    again with the reason a file was refused."""
    work_dir = storage().make_work_dir("upload-")
    try:
        paths = [
            (path, submissions.basename(name))
            for path, name in save_files(files, work_dir, "upload-")
        ]
        # A file is refused here with its reason; a bad frame of a time series fails alone,
        # on the worker.
        for path, name in paths if not time_series else []:
            try:
                submissions.quick_check_upload(path)
            except UnsupportedInput as exc:
                refuse("unrecognised_file")
                return _upload_form(f"{name}: {exc}", "file", 400)
        if time_series:
            try:
                batch, _ = batches.create_batch(paths, options, chain=True)
            except batches.BatchRefused as exc:
                refuse("frame_count")
                return _upload_form(f"{str(exc).capitalize()}.", "file", 400)
            return redirect(url_for("batches.batch_page", batch_id=batch.id), code=303)
        if len(paths) == 1:
            return submissions.submit_file(paths[0][0], paths[0][1], options)
        # Several files become one submission with one image each, like an archive.
        bundle = submissions.bundle_files(paths, work_dir / "bundle.tar")
        return submissions.submit_file(bundle, f"{len(paths)} files", options)
    finally:
        storage().discard(work_dir)


def _visible_submission(submission_id: int) -> Submission:
    submission = db.session.get(Submission, submission_id)
    if submission is None or not access.can_view(submission, current_user()):
        abort(404, f"There is no submission {submission_id}.")
    return submission


def _log_tail(job: Job, lines: int = LOG_TAIL_LINES) -> str:
    text = jobs.job_log_text(job.id, 64 * 1024) or ""
    return "\n".join(text.splitlines()[-lines:])


def _job_state(job: Job | None) -> dict[str, Any] | None:
    if job is None:
        return None
    state: dict[str, Any] = {
        "id": job.id,
        "status": job.status,
        "stage": job.stage,
        "failure_reason": job.failure_reason,
        "sources_detected": job.sources_detected,
        "queued_at": job.queued_at.isoformat() + "Z",
        "started_at": job.started_at.isoformat() + "Z" if job.started_at else None,
        "finished_at": job.finished_at.isoformat() + "Z" if job.finished_at else None,
    }
    if not job.is_finished:
        # The API's queue keys (nova.services.status): solves ahead, seconds until it ends.
        state.update(job_progress(job.id))
    if job.is_finished:
        state["log_tail"] = _log_tail(job)
    return state


def submission_state(submission: Submission) -> dict[str, Any]:
    images = [
        {
            "id": image.id,
            "original_filename": image.original_filename,
            "result_url": url_for("web.user_image", image_id=image.id),
            "job": _job_state(image.latest_job),
        }
        for image in submission.user_images
    ]
    finished = submission.processing_finished is not None and all(
        image["job"] is None or image["job"]["status"] in ("success", "failure") for image in images
    )
    return {
        "id": submission.id,
        "error_message": submission.error_message,
        "processing_started": submission.processing_started is not None,
        "finished": finished,
        "images": images,
    }


@bp.get("/status/<int:submission_id>")
def status(submission_id: int) -> Any:
    submission = _visible_submission(submission_id)
    user = current_user()
    return render_template(
        "status.html",
        submission=submission,
        state=submission_state(submission),
        is_owner=user is not None and user.id == submission.user_id,
    )


@bp.get("/status/<int:submission_id>/state")
def status_state(submission_id: int) -> Response:
    response = jsonify(submission_state(_visible_submission(submission_id)))
    response.headers["Cache-Control"] = "no-store"
    return response


def _visible_image(image_id: int) -> UserImage:
    image = db.session.get(UserImage, image_id)
    if image is None or not access.can_view(image, current_user()):
        abort(404, f"There is no image {image_id}.")
    return image


@bp.get("/user_images/<int:image_id>")
def user_image(image_id: int) -> Any:
    image = _visible_image(image_id)
    user = current_user()
    job = image.best_job
    if job is not None:
        batches.ensure_objects_in_field(job)  # a batch frame's, listed on first request
    calibration = job.calibration if job else None
    formatted = None
    if calibration is not None:
        formatted = {
            "ra_hms": format_ra_hms(calibration.ra),
            "dec_dms": format_dec_dms(calibration.dec),
            "size": format_size(calibration.width_arcsec, calibration.height_arcsec),
        }
    log_text = (jobs.job_log_text(job.id, 200_000) or "") if job is not None else ""
    nearby = []
    if calibration is not None:
        nearby = gallery.cone_search(
            calibration.ra,
            calibration.dec,
            calibration.radius,
            user,
            exclude_image=image.id,
            limit=6,
        )
    owner_default = (
        (image.user.default_commercial_use, image.user.default_modifications)
        if image.user
        else licences.SITE_DEFAULT
    )
    submission = image.submission
    my_albums = []
    if user is not None and user.id == image.user_id:
        my_albums = db.session.scalars(
            select(Album).where(Album.user_id == user.id).order_by(Album.title)
        ).all()
    return render_template(
        "user_image.html",
        image=image,
        job=job,
        calibration=calibration,
        formatted=formatted,
        hints_text=hints.describe_source(job.hints) if job and job.hints else None,
        hint_notes=(job.hints.get("notes") or []) if job and job.hints else [],
        deliveries=webhooks.deliveries(job) if job and submission.callback_url else [],
        log_text=log_text,
        is_owner=user is not None and user.id == image.user_id,
        user=user,
        machine_tags=[tag for tag in image.tags if tag.machine],
        user_tags=[tag for tag in image.tags if not tag.machine],
        nearby=nearby,
        licence=licences.resolve(
            submission.allow_commercial_use, submission.allow_modifications, owner_default
        ),
        albums=[album for album in image.albums if gallery.can_view_album(album, user)],
        my_albums=my_albums,
    )
