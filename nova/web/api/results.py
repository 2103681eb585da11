"""What the API answers about submissions and jobs: status, calibration, tags, objects,
annotations, listings, and the owner's cancel and delete."""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Response, request
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from nova.db.models import ImageTag, Job, Submission, User, UserImage
from nova.engine.calibration import nova_calibration
from nova.engine.job_files import ANNOTATIONS_NAME
from nova.engine.params import row_id
from nova.extensions import db
from nova.services import access, batches, jobs, retention, status, storage
from nova.web.api.protocol import (
    ANY_METHOD,
    ApiError,
    bp,
    fail,
    json_args,
    require_login,
    require_session,
)
from nova.web.api.status_polls import STATUS_CACHE_CONTROL
from nova.web.auth import current_user, session_user
from nova.web.errors import reply

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
    response.headers["Cache-Control"] = STATUS_CACHE_CONTROL
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
    if job is None or not access.owns(job.user_image, user):
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
    if submission is None or not access.owns(submission, user):
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
        .where(access.owned_clause(UserImage, user))
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
