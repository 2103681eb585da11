"""Pages around the images: dashboard, explore, search, tags, users, albums, and the
owner's and visitors' actions on an image (visibility, tags, comments, albums)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask_login
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from nova.db.models import Album, Comment, Job, Submission, User, UserImage
from nova.engine.params import row_id
from nova.extensions import db
from nova.services import gallery, jobs, retention
from nova.services.access import can_view
from nova.web.auth import current_user

bp = Blueprint("pages", __name__)
PER_PAGE = 24


# Beyond this, pages are empty anyway; an offset past what the database takes would be a 500.
MAX_PAGE = 100_000


def page_number() -> int:
    try:
        return min(MAX_PAGE, max(1, int(request.args.get("page", "1"))))
    except ValueError:
        return 1


def visible_image_or_404(image_id: int) -> UserImage:
    image = db.session.get(UserImage, image_id)
    if image is None or not can_view(image, current_user()):
        abort(404, f"There is no image {image_id}.")
    return image


def signed_in_user() -> User:
    return flask_login.current_user  # type: ignore[return-value]


def back_to_image(image: UserImage) -> Response:
    return redirect(url_for("web.user_image", image_id=image.id))


@bp.get("/dashboard")
@flask_login.login_required
def dashboard() -> Any:
    user = signed_in_user()
    tab = request.args.get("tab", "images")
    page = page_number()
    if tab == "submissions":
        items, more = gallery.page_of(gallery.user_submissions(user), page, PER_PAGE)
    elif tab == "albums":
        query = gallery.select(Album).where(Album.user_id == user.id).order_by(Album.id.desc())
        items, more = gallery.page_of(query, page, PER_PAGE)
    else:
        tab = "images"
        query = (
            gallery.select(UserImage)
            .where(UserImage.user_id == user.id)
            .order_by(UserImage.id.desc())
        )
        items, more = gallery.page_of(query, page, PER_PAGE)
    return render_template("pages/dashboard.html", tab=tab, items=items, page=page, more=more)


@bp.post("/dashboard/albums")
@flask_login.login_required
def create_album() -> Response:
    try:
        album = gallery.create_album(
            signed_in_user(),
            request.form.get("title", ""),
            request.form.get("description", ""),
            request.form.get("visible", "y") == "y",
        )
    except gallery.SiteError as exc:
        flash(str(exc), "error")
        return redirect(url_for("pages.dashboard", tab="albums"))
    return redirect(url_for("pages.album", album_id=album.id))


@bp.get("/explore")
def explore() -> Any:
    user = current_user()
    page = page_number()
    images, more = gallery.page_of(
        gallery.solved_images(user).order_by(UserImage.id.desc()), page, PER_PAGE
    )
    return render_template(
        "pages/explore.html", images=images, page=page, more=more, tags=gallery.popular_tags(user)
    )


@bp.get("/search")
def search() -> Any:
    """By sky position (RA/Dec in degrees or sexagesimal, and a radius) or by name."""
    user = current_user()
    args = request.args
    error = None
    matches: list[gallery.SkyMatch] = []
    images: list[UserImage] = []
    searched = False
    if args.get("ra") or args.get("dec"):
        searched = True
        try:
            ra, dec = gallery.parse_position(args.get("ra", ""), args.get("dec", ""))
            radius = float(args.get("radius") or 5)
            matches = gallery.cone_search(ra, dec, radius, user)
        except (gallery.SiteError, ValueError) as exc:
            error = str(exc)
    elif args.get("q", "").strip():
        searched = True
        images = db.session.scalars(gallery.name_search(args["q"], user).limit(200)).all()
    return render_template(
        "pages/search.html",
        matches=matches,
        images=images,
        error=error,
        searched=searched,
        args=args,
    )


@bp.get("/user_images/tag")
def by_tag() -> Any:
    query = request.args.get("query", "").strip()
    images: list[UserImage] = []
    if query:
        images = db.session.scalars(gallery.name_search(query, current_user()).limit(200)).all()
    return render_template(
        "pages/search.html",
        images=images,
        matches=[],
        error=None,
        searched=bool(query),
        args={"q": query},
    )


@bp.get("/users/<int:user_id>")
def user_page(user_id: int) -> Any:
    owner = db.session.get(User, user_id)
    if owner is None:
        abort(404, f"There is no user {user_id}.")
    page = page_number()
    query = (
        gallery.visible_images(current_user())
        .where(UserImage.user_id == user_id)
        .order_by(UserImage.id.desc())
    )
    images, more = gallery.page_of(query, page, PER_PAGE)
    return render_template("pages/user.html", owner=owner, images=images, page=page, more=more)


@bp.get("/albums/<int:album_id>")
def album(album_id: int) -> Any:
    found = db.session.get(Album, album_id)
    user = current_user()
    if found is None or not gallery.can_view_album(found, user):
        abort(404, f"There is no album {album_id}.")
    images = [image for image in found.images if can_view(image, user)]
    return render_template("pages/album.html", album=found, images=images)


def form_text() -> str:
    """The posted "text" field: a tag's or a comment's words."""
    return request.form.get("text", "")


def owner_action(image_id: int, action: Callable[[UserImage, User], object]) -> Response:
    """Run one of the signed-in user's actions on a visible image, then go back to its page;
    what gallery refuses (not the owner, an empty tag...) is flashed instead."""
    image = visible_image_or_404(image_id)
    try:
        action(image, signed_in_user())
    except gallery.SiteError as exc:
        flash(str(exc), "error")
    return back_to_image(image)


@bp.post("/user_images/<int:image_id>/visibility")
@flask_login.login_required
def set_visibility(image_id: int) -> Response:
    return owner_action(
        image_id,
        lambda image, user: gallery.set_visibility(image, user, request.form.get("visible") == "y"),
    )


@bp.post("/user_images/<int:image_id>/tags")
@flask_login.login_required
def add_tag(image_id: int) -> Response:
    return owner_action(image_id, lambda image, user: gallery.add_tag(image, user, form_text()))


@bp.post("/user_images/<int:image_id>/tags/<int:tag_id>/delete")
@flask_login.login_required
def remove_tag(image_id: int, tag_id: int) -> Response:
    return owner_action(image_id, lambda image, user: gallery.remove_tag(image, user, tag_id))


@bp.post("/user_images/<int:image_id>/comments")
@flask_login.login_required
def add_comment(image_id: int) -> Response:
    return owner_action(image_id, lambda image, user: gallery.add_comment(image, user, form_text()))


@bp.post("/comments/<int:comment_id>/delete")
@flask_login.login_required
def delete_comment(comment_id: int) -> Response:
    comment = db.session.get(Comment, comment_id)
    if comment is None:
        abort(404, f"There is no comment {comment_id}.")
    return owner_action(
        comment.user_image_id, lambda _image, user: gallery.delete_comment(comment, user)
    )


@bp.post("/user_images/<int:image_id>/albums")
@flask_login.login_required
def add_to_album(image_id: int) -> Response:
    def add(image: UserImage, user: User) -> None:
        album_id = request.form.get("album_id", "")
        # isdecimal, not isdigit: "²" is a digit that int() refuses.
        number = row_id(int(album_id)) if album_id.isascii() and album_id.isdecimal() else None
        found = db.session.get(Album, number) if number is not None else None
        if found is None:
            raise gallery.SiteError("Choose one of your albums.")
        gallery.add_to_album(image, found, user)

    return owner_action(image_id, add)


@bp.post("/user_images/<int:image_id>/delete")
@flask_login.login_required
def delete_image(image_id: int) -> Response:
    image = visible_image_or_404(image_id)
    try:
        gallery.require_owner(image, signed_in_user())
        retention.delete_image(image)
    except (gallery.SiteError, retention.StillRunning) as exc:
        flash(str(exc), "error")
        return back_to_image(image)
    flash(f"Image {image_id} and its files are deleted.")
    return redirect(url_for("pages.dashboard"))


@bp.post("/jobs/<int:job_id>/cancel")
@flask_login.login_required
def cancel_job(job_id: int) -> Response:
    """The owner's cancel button on the status page (jobs.cancel_job)."""
    job = db.session.get(Job, job_id)
    if job is None or job.user_image.user_id != signed_in_user().id:
        abort(404, f"There is no job {job_id}.")
    if jobs.cancel_job(job):
        flash(f"Job {job_id} is cancelled.")
    else:
        flash(f"Job {job_id} has ended already.", "error")
    return redirect(url_for("web.status", submission_id=job.user_image.submission_id))


@bp.post("/submissions/<int:submission_id>/delete")
@flask_login.login_required
def delete_submission(submission_id: int) -> Response:
    """The owner's delete button on the status page (retention.delete_submission_now)."""
    submission = db.session.get(Submission, submission_id)
    if submission is None or submission.user_id != signed_in_user().id:
        abort(404, f"There is no submission {submission_id}.")
    retention.delete_submission_now(submission)
    flash(f"Submission {submission_id} and its files are deleted.")
    return redirect(url_for("pages.dashboard"))
