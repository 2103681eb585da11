"""nova's JSON API under /api/, wire-compatible with its clients.

Conventions kept from nova (see nova-clients.md section 0): arguments arrive as one form
field ``request-json``; answers are JSON sent as ``text/plain``; errors are HTTP 200
``{"status": "error", "errormessage": ...}`` with nova's texts; read endpoints answer GET
and POST, with or without a trailing slash. Fixed: every argument is validated before
anything is stored, and private images are visible to their owner only, on every endpoint,
but for the solve result that nova.services.access opens to whoever holds the id.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

from flask import Blueprint, Response, current_app, request
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from nova.db.models import ApiSession, ImageTag, Job, Submission, User, UserImage
from nova.engine.calibration import nova_calibration
from nova.engine.job_files import ANNOTATIONS_NAME
from nova.engine.params import ParamError, parse_choice, parse_solve_params, row_id
from nova.extensions import db
from nova.infra.metrics import refuse
from nova.services import access, batches, jobs, retention, status, storage, submissions, webhooks
from nova.services.accounts import user_for_api_key
from nova.web.auth import current_user, open_api_session, session_user
from nova.web.errors import api_refusal, reply
from nova.web.forms import client_filename

bp = Blueprint("api", __name__, url_prefix="/api")
ANY_METHOD = ["GET", "POST"]


class ApiError(Exception):
    """Answered as nova's error envelope (HTTP 200 unless a status is given)."""

    def __init__(self, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@bp.errorhandler(ApiError)
def api_error(error: ApiError) -> Response:
    return api_refusal(error.message, error.status)


@bp.errorhandler(submissions.QueueFull)
def queue_full(error: submissions.QueueFull) -> Response:
    refuse("queue_full")
    # HTTP 200 with the envelope, as for every refusal clients are to show (nova-clients.md).
    return api_refusal(str(error))


def fail(message: str) -> NoReturn:
    raise ApiError(message)


def json_args() -> dict[str, Any]:
    raw = request.form.get("request-json")
    if not raw:
        fail("no json")
    try:
        args = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        fail(f'failed to parse JSON: "{raw[:1000]}"')
    if not isinstance(args, dict):
        fail("request-json must be a JSON object")
    if not _storable(args):
        fail("request-json holds a NUL character or an unpaired UTF-16 surrogate")
    return args


def _storable(value: object) -> bool:
    r"""True when every string in ``value`` can be stored and hashed: JSON may carry "\u0000"
    (PostgreSQL text refuses it) and lone surrogates such as "\ud800" (not encodable)."""
    pending = [value]
    while pending:  # iterative: the nesting depth is the client's choice
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or any("\ud800" <= char <= "\udfff" for char in item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def require_session(args: dict[str, Any]) -> ApiSession:
    if "session" not in args:
        refuse("not_signed_in")
        fail('no "session" in JSON.')
    key = args["session"]
    api_session = db.session.get(ApiSession, key) if isinstance(key, str) and key else None
    if api_session is None:
        refuse("not_signed_in")
        fail(f'no session with key "{key}"')
    return api_session


def require_login(args: dict[str, Any]) -> User:
    user = session_user(require_session(args).key)
    if user is None:  # the session exists but has expired
        refuse("not_signed_in")
        fail("user is not authenticated.")
    return user


# -- login and uploads ---------------------------------------------------------------------


@bp.route("/login", methods=ANY_METHOD)
def login() -> Response:
    args = json_args()
    if args.get("apikey") is None:  # absent or null, as nova
        fail('need "apikey"')
    key = args["apikey"]
    user = user_for_api_key(key) if isinstance(key, str) and key else None
    if user is None:
        fail("bad apikey")
    api_session = open_api_session(user)
    return reply(
        {
            "status": "success",
            "message": f"authenticated user: {user.email}",
            "session": api_session.key,
        }
    )


def upload_options(args: dict[str, Any], user: User) -> submissions.SubmissionOptions:
    try:
        params = parse_solve_params(args)
        visibility = parse_choice(
            "publicly_visible",
            args.get("publicly_visible"),
            ("y", "n"),
            current_app.config["API_DEFAULT_VISIBILITY"],
        )
        commercial = parse_choice(
            "allow_commercial_use", args.get("allow_commercial_use"), ("y", "n", "d"), "d"
        )
        modifications = parse_choice(
            "allow_modifications", args.get("allow_modifications"), ("y", "sa", "n", "d"), "d"
        )
    except ParamError as exc:
        refuse("invalid_argument")
        fail(f"invalid {exc.field}: {exc.message}")
    album = None
    if args.get("album") is not None:
        title = str(args["album"])
        album = submissions.find_album(user, title)
        if album is None:
            refuse("invalid_argument")
            fail(f'Failed to find an Album with title "{title}"')
    return submissions.SubmissionOptions(
        callback_url=callback_url(args),
        params=params,
        user=user,
        publicly_visible=visibility,
        allow_commercial_use=commercial,
        allow_modifications=modifications,
        via_api=True,
        album=album,
    )


def callback_url(args: dict[str, Any]) -> str | None:
    """The upload's optional ``callback_url`` (nova.services.webhooks), checked before anything
    is stored."""
    value = args.get("callback_url")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        fail("invalid callback_url: must be an http:// or https:// URL")
    try:
        return webhooks.check_callback_url(value)
    except ValueError as exc:
        fail(str(exc))


def star_lists(args: dict[str, Any]) -> tuple[list[float], list[float]]:
    x, y = args.get("x"), args.get("y")

    def numbers(values: object) -> list[float] | None:
        if not isinstance(values, list) or not values:
            return None
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return None
        floats = [float(v) for v in values]
        return floats if all(math.isfinite(v) for v in floats) else None

    xs, ys = numbers(x), numbers(y)
    if xs is None or ys is None:
        refuse("invalid_argument")
        fail('Failed to parse JSON "x" and "y" values -- should be lists of floats')
    if len(xs) != len(ys):
        refuse("invalid_argument")
        fail('"x" and "y" lists must be the same length')
    if len(xs) > current_app.config["MAX_STARS"]:
        refuse("invalid_argument")
        fail(f'"x" and "y" lists are longer than the limit of {current_app.config["MAX_STARS"]}')
    return xs, ys


@bp.route("/upload", methods=ANY_METHOD)
def upload() -> Response:
    args = json_args()
    user = require_login(args)
    options = upload_options(args, user)
    if "x" in args or "y" in args:
        submission = submissions.submit_star_list(*star_lists(args), options)
    else:
        file = request.files.get("file")
        if file is None:
            refuse("no_input")
            fail('no file: send the image as a "file" part, or "x" and "y" lists')
        work_dir = storage().make_work_dir("upload-")
        try:
            path = work_dir / "upload"
            file.save(path)
            if path.stat().st_size == 0:
                refuse("empty_file")
                fail("the uploaded file is empty")
            submission = submissions.submit_file(path, client_filename(file), options)
        finally:
            storage().discard(work_dir)
    return reply({"status": "success", "subid": submission.id, "hash": submission.upload_hash})


@bp.route("/url_upload", methods=ANY_METHOD)
def url_upload() -> Response:
    args = json_args()
    user = require_login(args)
    options = upload_options(args, user)
    if "x" in args or "y" in args:
        # astroquery sends its source lists here, with no "url".
        submission = submissions.submit_star_list(*star_lists(args), options)
        return reply({"status": "success", "subid": submission.id, "hash": submission.upload_hash})
    url = args.get("url")
    if not isinstance(url, str) or not url.strip():
        refuse("no_input")
        fail('need "url" (or "x" and "y" lists)')
    try:
        url = submissions.validate_url(url)
    except ValueError as exc:
        refuse("invalid_url")
        fail(str(exc))
    submission = submissions.submit_url(url, options)
    return reply({"status": "success", "subid": submission.id})


# -- status and results --------------------------------------------------------------------


def nova_time(value: object) -> str:
    """nova's timestamps: Python str() of a naive UTC datetime, or the string "None"."""
    return str(value)


def visible_job(job_id: int, *, solve_result: bool = True) -> tuple[Job, bool]:
    """(job, whether the caller sees its image) when the caller may see the image or, for
    the solve result (``solve_result``), holds the id; a JSON 404 otherwise."""
    # The caller first: it reads the request body, which a keep-alive connection needs read
    # before the next request, even when the id turns out missing.
    user = current_user()
    # One query with its image: clients poll this several times a second per job.
    job = db.session.get(Job, job_id, options=[joinedload(Job.user_image)])
    if job is None:
        raise ApiError("job does not exist", 404)
    sees_image = access.can_view(job.user_image, user)
    if not sees_image and not (solve_result and access.id_opens_job(job)):
        raise ApiError("job does not exist", 404)
    return job, sees_image


def visible_job_with_objects(job_id: int, *, solve_result: bool = True) -> tuple[Job, bool]:
    """``visible_job`` for the endpoints that show the objects in the field: a batch frame's
    are listed on this first request (batches.ensure_objects_in_field)."""
    job, sees_image = visible_job(job_id, solve_result=solve_result)
    batches.ensure_objects_in_field(job)
    return job, sees_image


@bp.route("/submission_images", methods=ANY_METHOD)
def submission_images() -> Response:
    args = json_args()
    user = session_user(require_session(args).key)
    submission_id = row_id(args.get("subid"))
    submission = None
    if submission_id is not None:
        submission = db.session.get(Submission, submission_id)
    if submission is None or not access.can_view(submission, user):
        fail("submission does not exist")
    return reply({"status": "success", "image_ids": [i.id for i in submission.user_images]})


def _caller_id() -> int | None:
    """The caller's user id, looked up only when an answer depends on it (a private row)."""
    user = current_user()
    return user.id if user is not None else None


def _status_reply(payload: dict[str, Any] | None, missing: str) -> Response:
    # The body is read in any case: a keep-alive connection needs it read before the next
    # request, even when the id turns out missing.
    request.get_data()
    if payload is None:
        raise ApiError(missing, 404)
    response = reply(payload)
    # It changes as the job runs, and may be one an id opens: never kept by a cache.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/submissions/<int:submission_id>", methods=ANY_METHOD)
def submission_status(submission_id: int) -> Response:
    # Built from cached facts (nova.services.status), as the event streams build theirs.
    return _status_reply(
        status.submission_answer(submission_id, _caller_id), "submission does not exist"
    )


@bp.route("/jobs/<int:job_id>", methods=ANY_METHOD)
def job_status(job_id: int) -> Response:
    return _status_reply(status.job_answer(job_id, _caller_id), "job does not exist")


def calibration_dict(job: Job, *, with_size: bool) -> dict[str, float] | None:
    if job.calibration is None:
        return None
    return nova_calibration(job.calibration, with_size=with_size)


def no_calibration(job_id: int) -> Response:
    return reply({"error": f"no calibration data available for job {job_id}"})


@bp.route("/jobs/<int:job_id>/calibration", methods=ANY_METHOD)
def job_calibration(job_id: int) -> Response:
    job, _ = visible_job(job_id)
    values = calibration_dict(job, with_size=True)
    return reply(values) if values is not None else no_calibration(job_id)


def tag_texts(image: UserImage, *, machine_only: bool = False) -> list[str]:
    return [tag.text for tag in image.tags if tag.machine or not machine_only]


@bp.route("/jobs/<int:job_id>/tags", methods=ANY_METHOD)
def job_tags(job_id: int) -> Response:
    # Tags hold what users wrote: not part of the solve result an id opens.
    job, _ = visible_job_with_objects(job_id, solve_result=False)
    return reply({"tags": tag_texts(job.user_image)})


@bp.route("/jobs/<int:job_id>/machine_tags", methods=ANY_METHOD)
def job_machine_tags(job_id: int) -> Response:
    job, _ = visible_job_with_objects(job_id)
    return reply({"tags": tag_texts(job.user_image, machine_only=True)})


@bp.route("/jobs/<int:job_id>/objects_in_field", methods=ANY_METHOD)
def job_objects(job_id: int) -> Response:
    job, _ = visible_job_with_objects(job_id)
    return reply({"objects_in_field": [obj.name for obj in job.user_image.sky_objects]})


@bp.route("/jobs/<int:job_id>/info", methods=ANY_METHOD)
def job_info(job_id: int) -> Response:
    # N.I.N.A. polls this one: cached facts too (nova.services.status).
    return _status_reply(status.job_info_answer(job_id, _caller_id), "job does not exist")


def owned_job(job_id: int, user: User) -> Job:
    """The caller's own job; a JSON 404 for anyone else's (as if it did not exist)."""
    job = db.session.get(Job, job_id)
    if job is None or job.user_image.user_id != user.id:
        raise ApiError("job does not exist", 404)
    return job


@bp.post("/jobs/<int:job_id>/cancel")
def job_cancel(job_id: int) -> Response:
    """Nova's own endpoint: the owner stops a queued or solving job (nova.infra.cancellation)."""
    user = require_login(json_args())
    job = owned_job(job_id, user)
    if not jobs.cancel_job(job):
        fail(f"job {job_id} has ended already ({status.JOB_STATUS_BLURB.get(job.status, '?')})")
    ended = status.JOB_STATUS_BLURB.get(job.status, "?")
    return reply({"status": "success", "job": job.id, "job_status": ended})


@bp.post("/submissions/<int:submission_id>/delete")
def submission_delete(submission_id: int) -> Response:
    """Nova's own endpoint: the owner deletes a submission with its images, jobs, products
    and stored files (nova.services.retention.delete_submission_now); running jobs are cancelled."""
    user = require_login(json_args())
    submission = db.session.get(Submission, submission_id)
    if submission is None or submission.user_id != user.id:
        raise ApiError("submission does not exist", 404)
    removal = retention.delete_submission_now(submission)
    return reply(
        {
            "status": "success",
            "deleted": {
                "submission": submission_id,
                "images": removal.images,
                "jobs": removal.jobs,
                "files": removal.files,
            },
        }
    )


@bp.route("/jobs/<int:job_id>/annotations", methods=ANY_METHOD)
def job_annotations(job_id: int) -> Response:
    job, _ = visible_job_with_objects(job_id)
    nbright_text = request.args.get("nbright")
    nbright = None
    if nbright_text is not None:
        try:
            nbright = int(nbright_text)
        except ValueError:
            fail(f"nbright must be an integer, got {nbright_text!r}")
        if nbright < 0:
            fail("nbright must not be negative")
    if job.calibration is None:
        return no_calibration(job_id)
    path = storage().job_file(job.id, ANNOTATIONS_NAME)
    raw = json.loads(path.read_text()) if path is not None else []
    stars = [item for item in raw if item.get("type") == "star"]
    if nbright is not None:
        # The N brightest named stars in the field (unknown magnitudes last).
        stars = sorted(stars, key=lambda item: item.get("vmag", math.inf))[:nbright]
    annotations = []
    for item in [item for item in raw if item.get("type") != "star"] + stars:
        names = [str(name) for name in item.get("names", [])]
        entry: dict[str, Any] = {
            "type": "bright"
            if item.get("type") == "star"
            else "ic"
            if names and names[0].startswith("IC ")
            else "ngc",
            "names": names,
            "pixelx": float(item["pixelx"]),
            "pixely": float(item["pixely"]),
            "radius": float(item.get("radius", 0.0)),
        }
        if "vmag" in item:
            entry["vmag"] = float(item["vmag"])
        annotations.append(entry)
    return reply({"annotations": annotations})


@bp.route("/myjobs", methods=ANY_METHOD)
@bp.route("/myjobs/<path:rest>", methods=ANY_METHOD)
def my_jobs(rest: str = "") -> Response:
    user = require_login(json_args())
    job_ids = db.session.scalars(
        select(Job.id)
        .join(UserImage)
        .where(UserImage.user_id == user.id)
        .order_by(Job.queued_at, Job.id)  # oldest first, as nova (ids are random)
    ).all()
    return reply({"jobs": list(job_ids), "status": "success"})


@bp.route("/jobs_by_tag", methods=ANY_METHOD)
def jobs_by_tag() -> Response:
    query = request.args.get("query")
    if not query:
        fail('need "query"')
    user = current_user()
    tag_match = (
        func.lower(ImageTag.text) == query.lower()
        if request.args.get("exact")
        else ImageTag.text.ilike(f"%{_escape_like(query)}%", escape="\\")
    )
    image_ids = select(ImageTag.user_image_id).where(tag_match)
    job_ids = db.session.scalars(
        select(Job.id)
        .join(UserImage)
        .where(UserImage.id.in_(image_ids), access.visible_clause(UserImage, user))
        .order_by(Job.queued_at, Job.id)
    ).all()
    return reply({"job_ids": list(job_ids)})


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
