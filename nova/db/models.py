"""Database models: users, submissions, the images they yield, solve jobs, calibrations.

The ``Job.status`` column is the state machine (queued -> solving -> success | failure);
the queue only carries job ids, so a lost or duplicated queue entry never changes state.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, String, Text, select, true
from sqlalchemy.engine import ExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, relationship

from nova.extensions import db


def utcnow() -> datetime:
    """Naive UTC now: nova reports timestamps as naive UTC strings."""
    return datetime.now(UTC).replace(tzinfo=None)


# Submission and job ids are random (nova.services.access says why): drawn from here, above every
# sequential id Nova handed out before (job ids started at the seconds since 2020, about
# 2.2e8 in 2026), and within a signed 32-bit int, because C# and Java clients (N.I.N.A.,
# StellarSolver's Qt, AstroImageJ) parse them so.
RANDOM_ID_LOW = 1_000_000_000
RANDOM_ID_HIGH = 2**31 - 1


def random_id(column: Callable[[], Column[int]]) -> Callable[[ExecutionContext], int]:
    """A column default: a random id not used yet in ``column``. Two inserts drawing the same
    free id at the same moment would need a one-in-a-billion coincidence; the primary key
    refuses the second then."""

    def draw(context: ExecutionContext) -> int:
        while True:
            candidate = RANDOM_ID_LOW + secrets.randbelow(RANDOM_ID_HIGH - RANDOM_ID_LOW + 1)
            existing = select(column()).where(column() == candidate)
            if context.connection.execute(existing).first() is None:
                return candidate

    return draw


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    SOLVING = "solving"
    SUCCESS = "success"
    FAILURE = "failure"


class User(db.Model):
    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    # SHA-256 of the API key: keys are long random strings, so a fast hash is enough
    # and lets login look the key up by index.
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    # Web sign-in; None for users created without a password (API only).
    password_hash: Mapped[str | None] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login: Mapped[datetime | None]
    # Defaults the upload form starts from.
    default_visibility: Mapped[str] = mapped_column(String(1), default="y")
    default_commercial_use: Mapped[str] = mapped_column(String(1), default="y")
    default_modifications: Mapped[str] = mapped_column(String(2), default="y")
    # Named by every web session (``get_id``); a new one (sign-out, password change, API key
    # reset) ends them all, wherever they are. None before the first such event.
    session_token: Mapped[str | None] = mapped_column(String(64))
    # Key of the HMAC that signs this user's webhook deliveries (nova.services.webhooks); shown with
    # the API key. None until first needed (accounts made before webhooks).
    webhook_secret: Mapped[str | None] = mapped_column(String(64))

    # Flask-Login's protocol.
    is_active = True
    is_authenticated = True
    is_anonymous = False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_token or ''}"

    @property
    def name(self) -> str:
        """What others see: the display name, never any part of the email."""
        return self.display_name or "unnamed user"


class ApiSession(db.Model):
    """A login through /api/login. Keys are alphanumeric: some clients send them unencoded."""

    __tablename__ = "api_sessions"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]

    user: Mapped[User] = relationship()


class RememberToken(db.Model):
    """One browser's "remember me" cookie (nova.services.remember): it signs in once, and that
    sign-in replaces it with a new one, so a copied cookie works until either is used."""

    __tablename__ = "remember_tokens"

    # The cookie holds ``<selector>.<validator>``; only the validator's SHA-256 is stored.
    selector: Mapped[str] = mapped_column(String(32), primary_key=True)
    validator_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]

    user: Mapped[User] = relationship()


album_images = db.Table(
    "album_images",
    db.Column("album_id", ForeignKey("albums.id"), primary_key=True),
    db.Column("user_image_id", ForeignKey("user_images.id"), primary_key=True),
)


class Album(db.Model):
    __tablename__ = "albums"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    publicly_visible: Mapped[str] = mapped_column(String(1), default="y")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    images: Mapped[list[UserImage]] = relationship(secondary=album_images)


class Submission(db.Model):
    """One upload (a file, a URL or an x/y list) with the solve parameters it was sent with."""

    __tablename__ = "submissions"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(
        primary_key=True, default=random_id(lambda: Submission.__table__.c.id)
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    # Indexed: retention (`nova purge`) selects old submissions by date.
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    via_api: Mapped[bool] = mapped_column(default=False)
    url: Mapped[str | None] = mapped_column(Text)
    upload_hash: Mapped[str | None] = mapped_column(String(40))
    original_filename: Mapped[str] = mapped_column(String(256), default="")
    processing_started: Mapped[datetime | None]
    processing_finished: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    # How many times a worker took it: the reconciler gives up after NOVA_MAX_ATTEMPTS.
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    # The uploader's address, for the queue cap of anonymous uploads (NOVA_MAX_QUEUED_JOBS).
    client_address: Mapped[str | None] = mapped_column(String(64), index=True)

    publicly_visible: Mapped[str] = mapped_column(String(1), default="y")
    allow_commercial_use: Mapped[str] = mapped_column(String(1), default="d")
    allow_modifications: Mapped[str] = mapped_column(String(2), default="d")

    # Solve parameters, with nova's defaults (see nova.engine.params.SolveParams).
    scale_units: Mapped[str] = mapped_column(String(16), default="degwidth")
    scale_type: Mapped[str] = mapped_column(String(2), default="ul")
    scale_lower: Mapped[float | None] = mapped_column(default=0.1)
    scale_upper: Mapped[float | None] = mapped_column(default=180.0)
    scale_est: Mapped[float | None]
    scale_err: Mapped[float | None]
    center_ra: Mapped[float | None]
    center_dec: Mapped[float | None]
    radius: Mapped[float | None]
    parity: Mapped[int] = mapped_column(default=2)
    tweak_order: Mapped[int] = mapped_column(default=2)
    downsample_factor: Mapped[int] = mapped_column(default=2)
    crpix_center: Mapped[bool] = mapped_column(default=False)
    invert: Mapped[bool] = mapped_column(default=False)
    positional_error: Mapped[float | None]
    use_sextractor: Mapped[bool] = mapped_column(default=False)
    image_width: Mapped[int] = mapped_column(default=0)
    image_height: Mapped[int] = mapped_column(default=0)
    use_header_hints: Mapped[bool] = mapped_column(default=True, server_default=true())

    album_id: Mapped[int | None] = mapped_column(ForeignKey("albums.id"))
    # Where to POST the end of each of its jobs (nova.services.webhooks), and for an anonymous
    # upload
    # the key that signs those posts (an account's uploads use the account's webhook secret).
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_secret: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User | None] = relationship()
    user_images: Mapped[list[UserImage]] = relationship(
        back_populates="submission", order_by="UserImage.id"
    )


class UserImage(db.Model):
    """An image (or star list) found in a submission, as stored and measured."""

    __tablename__ = "user_images"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Indexed: result reuse looks up earlier solves of the same file by its hash, and
    # deleting an image keeps the stored file while other images still use it.
    file_hash: Mapped[str | None] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    width: Mapped[int]
    height: Mapped[int]
    fits_extension: Mapped[int] = mapped_column(default=0)
    original_filename: Mapped[str] = mapped_column(String(256), default="")
    publicly_visible: Mapped[str] = mapped_column(String(1), default="y")

    submission: Mapped[Submission] = relationship(back_populates="user_images")
    # Oldest first (ids are random): latest_job and best_job read the end of this list.
    jobs: Mapped[list[Job]] = relationship(
        back_populates="user_image", order_by="(Job.queued_at, Job.id)"
    )
    tags: Mapped[list[ImageTag]] = relationship(order_by="ImageTag.id")
    sky_objects: Mapped[list[SkyObject]] = relationship(order_by="SkyObject.id")
    comments: Mapped[list[Comment]] = relationship(order_by="Comment.id")
    user: Mapped[User | None] = relationship()
    albums: Mapped[list[Album]] = relationship(secondary=album_images, viewonly=True)

    @property
    def latest_job(self) -> Job | None:
        return self.jobs[-1] if self.jobs else None

    @property
    def best_job(self) -> Job | None:
        """The newest solved job, else the newest job (nova's get_best_job, without its bugs)."""
        for job in reversed(self.jobs):
            if job.status == JobStatus.SUCCESS:
                return job
        return self.latest_job


class ImageTag(db.Model):
    """A tag on an image: by a user, or by the machine (objects found in the field)."""

    __tablename__ = "image_tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_image_id: Mapped[int] = mapped_column(ForeignKey("user_images.id"), index=True)
    text: Mapped[str] = mapped_column(String(256), index=True)
    machine: Mapped[bool] = mapped_column(default=False)
    tagger_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Comment(db.Model):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_image_id: Mapped[int] = mapped_column(ForeignKey("user_images.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    author: Mapped[User] = relationship()


class SkyObject(db.Model):
    """A named object (constellation, star, NGC/IC object) found in an image's field."""

    __tablename__ = "sky_objects"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_image_id: Mapped[int] = mapped_column(ForeignKey("user_images.id"), index=True)
    name: Mapped[str] = mapped_column(String(256), index=True)


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True, default=random_id(lambda: Job.__table__.c.id))
    user_image_id: Mapped[int] = mapped_column(ForeignKey("user_images.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    stage: Mapped[str] = mapped_column(String(32), default="queued")
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    failure_reason: Mapped[str | None] = mapped_column(Text)
    sources_detected: Mapped[int | None]
    # How many times a worker took this job (a worker that dies mid-solve means a retry),
    # and when the solving worker last said it was alive.
    attempts: Mapped[int] = mapped_column(default=0)
    heartbeat_at: Mapped[datetime | None]
    # Where the solve's hints came from (nova.engine.hints): source, keywords, scale and position
    # used, header attempts that did not solve, header values ignored and why.
    hints: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # How good the solution is (nova.engine.quality): log-odds, stars matched, index, RMS, SIP
    # order.
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    user_image: Mapped[UserImage] = relationship(back_populates="jobs")
    calibration: Mapped[Calibration | None] = relationship(back_populates="job")

    @property
    def is_finished(self) -> bool:
        return self.status in (JobStatus.SUCCESS, JobStatus.FAILURE)


class Calibration(db.Model):
    """The solved WCS of a job and the numbers nova derives from it."""

    __tablename__ = "calibrations"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)
    ra: Mapped[float]
    dec: Mapped[float]
    radius: Mapped[float]
    pixscale: Mapped[float]
    orientation: Mapped[float]
    parity: Mapped[float]
    width_arcsec: Mapped[float]
    height_arcsec: Mapped[float]
    # Unit vector of the field centre, for sky-position search.
    x: Mapped[float]
    y: Mapped[float]
    z: Mapped[float]
    # Declination band the field covers (centre +- radius, clipped at the poles): indexed,
    # so a cone search reads only the rows whose band meets the cone's.
    dec_min: Mapped[float] = mapped_column(index=True)
    dec_max: Mapped[float] = mapped_column(index=True)
    # The complete wcs.fits header (TAN and SIP cards) as FITS header text.
    wcs_header: Mapped[str] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="calibration")


class WebhookDelivery(db.Model):
    """One try to POST a job's end to its submission's callback_url (nova.services.webhooks)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The receiver's HTTP status, or None when no answer came (refused address, timeout).
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
