"""State changes and queries behind the pages: tags, comments, albums, visibility, search."""

from __future__ import annotations

import math
from dataclasses import dataclass

from astropy import units as u
from astropy.coordinates import Angle
from sqlalchemy import Select, func, or_, select

from nova.db import models
from nova.db.models import Album, Comment, ImageTag, Job, JobStatus, Submission, User, UserImage
from nova.extensions import db
from nova.services import access

MAX_TAG_LENGTH = 100
MAX_COMMENT_LENGTH = 5000
MAX_ALBUM_DESCRIPTION_LENGTH = 5000


class SiteError(ValueError):
    """A request the page refuses; the message is shown to the user."""


def visible_images(user: User | None) -> Select[tuple[UserImage]]:
    """Images ``user`` may see (nova.services.access's rule) that hold something to show."""
    return select(UserImage).where(
        UserImage.kind != "unsupported", access.visible_clause(UserImage, user)
    )


def solved_images(user: User | None) -> Select[tuple[UserImage]]:
    solved = select(Job.user_image_id).where(Job.status == JobStatus.SUCCESS)
    return visible_images(user).where(UserImage.id.in_(solved))


def page_of(query: Select[tuple[UserImage]], page: int, per_page: int) -> tuple[list, bool]:
    """One page of results and whether there is a next one."""
    rows = db.session.scalars(query.offset((page - 1) * per_page).limit(per_page + 1)).all()
    return list(rows[:per_page]), len(rows) > per_page


# -- owner actions -------------------------------------------------------------------------


def require_owner(image: UserImage, user: User) -> None:
    if not access.owns(image, user):
        raise SiteError("Only the owner can change this image.")


def set_visibility(image: UserImage, user: User, visible: bool) -> None:
    require_owner(image, user)
    value = "y" if visible else "n"
    image.publicly_visible = value
    submission = image.submission
    # The submission is private as soon as one of its images is.
    submission.publicly_visible = (
        "y" if all(i.publicly_visible == "y" for i in submission.user_images) else "n"
    )
    db.session.commit()


def add_tag(image: UserImage, user: User, text: str) -> ImageTag:
    require_owner(image, user)
    text = " ".join(text.split())
    if not text:
        raise SiteError("A tag cannot be empty.")
    if len(text) > MAX_TAG_LENGTH:
        raise SiteError(f"A tag can have at most {MAX_TAG_LENGTH} characters.")
    existing = next((t for t in image.tags if not t.machine and t.text == text), None)
    if existing is not None:
        return existing
    tag = ImageTag(user_image_id=image.id, text=text, machine=False, tagger_id=user.id)
    db.session.add(tag)
    db.session.commit()
    return tag


def remove_tag(image: UserImage, user: User, tag_id: int) -> None:
    require_owner(image, user)
    tag = db.session.get(ImageTag, tag_id)
    if tag is None or tag.user_image_id != image.id:
        raise SiteError("There is no such tag on this image.")
    db.session.delete(tag)
    db.session.commit()


def add_comment(image: UserImage, user: User, text: str) -> Comment:
    text = text.strip()
    if not text:
        raise SiteError("A comment cannot be empty.")
    if len(text) > MAX_COMMENT_LENGTH:
        raise SiteError(f"A comment can have at most {MAX_COMMENT_LENGTH} characters.")
    comment = Comment(user_image_id=image.id, author_id=user.id, text=text)
    db.session.add(comment)
    db.session.commit()
    return comment


def delete_comment(comment: Comment, user: User) -> None:
    image = db.session.get(UserImage, comment.user_image_id)
    if comment.author_id != user.id and (image is None or not access.owns(image, user)):
        raise SiteError("Only the author or the image's owner can delete a comment.")
    db.session.delete(comment)
    db.session.commit()


def create_album(user: User, title: str, description: str = "", visible: bool = True) -> Album:
    title = " ".join(title.split())
    if not title or len(title) > 256:
        raise SiteError("An album needs a title of at most 256 characters.")
    description = description.strip()
    if len(description) > MAX_ALBUM_DESCRIPTION_LENGTH:
        raise SiteError(
            f"An album's description can have at most {MAX_ALBUM_DESCRIPTION_LENGTH} characters."
        )
    album = Album(
        user_id=user.id,
        title=title,
        description=description,
        publicly_visible="y" if visible else "n",
    )
    db.session.add(album)
    db.session.commit()
    return album


def add_to_album(image: UserImage, album: Album, user: User) -> None:
    require_owner(image, user)
    if not access.owns(album, user):
        raise SiteError("You can only add images to your own albums.")
    if image not in album.images:
        album.images.append(image)
        db.session.commit()


def can_view_album(album: Album, user: User | None) -> bool:
    return access.can_view(album, user)


# -- search --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkyMatch:
    image: UserImage
    distance: float  # degrees from the search centre to the field centre


def parse_position(ra_text: str, dec_text: str) -> tuple[float, float]:
    """RA in degrees or sexagesimal hours (12:28:44, 12h28m44s); Dec in degrees or d:m:s."""
    ra_text, dec_text = ra_text.strip(), dec_text.strip()
    try:
        if any(mark in ra_text for mark in ": hms"):
            ra = Angle(ra_text, unit=u.hourangle).degree
        else:
            ra = float(ra_text)
        dec = (
            Angle(dec_text, unit=u.deg).degree
            if any(m in dec_text for m in ": dms°'\"")
            else float(dec_text)
        )
    except (ValueError, u.UnitsError) as exc:
        raise SiteError(f"Could not read the position {ra_text!r}, {dec_text!r}: {exc}") from None
    if not (0 <= ra < 360 or math.isclose(ra, 360)) or not -90 <= dec <= 90:
        raise SiteError("RA must be 0-360 degrees (0-24 h) and Dec -90 to +90 degrees.")
    return float(ra) % 360, float(dec)


def angular_distance(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    cos = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(r1 - r2)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def cone_search(
    ra: float,
    dec: float,
    radius: float,
    user: User | None,
    exclude_image: int | None = None,
    limit: int = 200,
) -> list[SkyMatch]:
    """Visible solved images whose field overlaps the circle (centre, radius degrees).

    The indexed declination band of each field narrows the rows read; the exact overlap
    (centre distance < search radius + field radius) is then computed for those only.
    """
    if not 0 < radius <= 180:
        raise SiteError("The search radius must be greater than 0 and at most 180 degrees.")
    low, high = dec - radius, dec + radius
    query = (
        select(UserImage, models.Calibration)
        .join(Job, Job.user_image_id == UserImage.id)
        .join(models.Calibration, models.Calibration.job_id == Job.id)
        .where(models.Calibration.dec_min <= high, models.Calibration.dec_max >= low)
        .where(UserImage.id.in_(visible_images(user).with_only_columns(UserImage.id)))
    )
    matches: dict[int, SkyMatch] = {}
    for image, calibration in db.session.execute(query):
        if image.id == exclude_image:
            continue
        distance = angular_distance(ra, dec, calibration.ra, calibration.dec)
        if distance <= radius + calibration.radius and (
            image.id not in matches or distance < matches[image.id].distance
        ):
            matches[image.id] = SkyMatch(image, distance)
    return sorted(matches.values(), key=lambda match: match.distance)[:limit]


def name_search(text: str, user: User | None) -> Select[tuple[UserImage]]:
    """Images with an object in the field or a tag containing ``text`` (case-insensitive)."""
    pattern = f"%{text.strip()}%"
    by_object = select(models.SkyObject.user_image_id).where(models.SkyObject.name.ilike(pattern))
    by_tag = select(ImageTag.user_image_id).where(ImageTag.text.ilike(pattern))
    return (
        visible_images(user)
        .where(or_(UserImage.id.in_(by_object), UserImage.id.in_(by_tag)))
        .order_by(UserImage.id.desc())
    )


def popular_tags(user: User | None, limit: int = 30) -> list[tuple[str, int]]:
    visible = visible_images(user).with_only_columns(UserImage.id)
    rows = db.session.execute(
        select(ImageTag.text, func.count(ImageTag.id))
        .where(ImageTag.user_image_id.in_(visible), ImageTag.machine.is_(False))
        .group_by(ImageTag.text)
        .order_by(func.count(ImageTag.id).desc(), ImageTag.text)
        .limit(limit)
    ).all()
    return [(text, count) for text, count in rows]


def user_submissions(user: User) -> Select[tuple[Submission]]:
    return (
        select(Submission)
        .where(access.owned_clause(Submission, user))
        .order_by(Submission.created_at.desc(), Submission.id.desc())  # ids are random
    )
