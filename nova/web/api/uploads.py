"""Uploads through nova's API: a file or a URL, with the solve options of request-json."""

from __future__ import annotations

import math
from typing import Any

from flask import Response, request

from nova.db.models import Submission, User
from nova.engine.params import ParamError, parse_choice, parse_solve_params
from nova.extensions import settings
from nova.infra.metrics import refuse
from nova.services import storage, submissions, webhooks
from nova.web.api.protocol import (
    ANY_METHOD,
    bp,
    fail,
    json_args,
    require_login,
)
from nova.web.errors import reply
from nova.web.forms import client_filename


def upload_options(args: dict[str, Any], user: User) -> submissions.SubmissionOptions:
    try:
        params = parse_solve_params(args)
        visibility = parse_choice(
            "publicly_visible",
            args.get("publicly_visible"),
            ("y", "n"),
            settings().api_default_visibility,
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
    if len(xs) > settings().max_stars:
        refuse("invalid_argument")
        fail(f'"x" and "y" lists are longer than the limit of {settings().max_stars}')
    return xs, ys


def submitted_star_list(
    args: dict[str, Any], options: submissions.SubmissionOptions
) -> Submission | None:
    """The star list of a request that sends "x" and "y" lists (astroquery sends them to
    both upload endpoints, with no file or url), submitted; None when it sends none."""
    if "x" not in args and "y" not in args:
        return None
    return submissions.submit_star_list(*star_lists(args), options)


@bp.route("/upload", methods=ANY_METHOD)
def upload() -> Response:
    args = json_args()
    options = upload_options(args, require_login(args))
    submission = submitted_star_list(args, options)
    if submission is None:
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
    options = upload_options(args, require_login(args))
    listed = submitted_star_list(args, options)
    if listed is not None:
        return reply({"status": "success", "subid": listed.id, "hash": listed.upload_hash})
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
