"""Taking uploads in: a file, a star list or a URL becomes a submission row, then a queue entry.

Every function here that changes rows commits, and queues only after its commit."""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from astropy.io import fits
from sqlalchemy import func, select

from nova import logs
from nova.db.models import Album, Job, JobStatus, Submission, User, UserImage
from nova.engine import archives
from nova.engine.inputs import sniff_upload
from nova.engine.params import SolveParams
from nova.extensions import db, settings
from nova.infra import jobqueue
from nova.services import access, storage, webhooks
from nova.services.reuse import reuse_solution

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmissionOptions:
    """What a submission carries besides its data: who, how visible, which licence, album."""

    params: SolveParams
    user: User | None = None
    publicly_visible: str = "y"
    allow_commercial_use: str = "d"
    allow_modifications: str = "d"
    via_api: bool = False
    album: Album | None = None
    client_address: str | None = None  # the uploader's address (kept for anonymous ones)
    callback_url: str | None = None  # where to POST each job's end (nova.services.webhooks)


class QueueFull(Exception):
    """The caller has as much work waiting as NOVA_MAX_QUEUED_JOBS allows."""


def pending_work(user_id: int | None, address: str | None, exclude: int | None = None) -> int:
    """Jobs queued or solving plus uploads not yet read, of an account or (anonymous) of an
    address; ``exclude`` leaves one submission out (the one being read)."""
    if user_id is not None:
        owner = Submission.user_id == user_id
    elif address:
        owner = Submission.user_id.is_(None) & (Submission.client_address == address)
    else:
        return 0  # no address (a command, a test): nothing to count against
    others = Submission.id != exclude if exclude is not None else True
    jobs = db.session.scalar(
        select(func.count(Job.id))
        .join(UserImage, Job.user_image_id == UserImage.id)
        .join(Submission, UserImage.submission_id == Submission.id)
        .where(owner, others, Job.status.in_((JobStatus.QUEUED, JobStatus.SOLVING)))
    )
    unread = db.session.scalar(
        select(func.count(Submission.id)).where(
            owner, others, Submission.processing_finished.is_(None)
        )
    )
    return int(jobs or 0) + int(unread or 0)


def queue_full_message(waiting: int, adding: int = 1) -> str:
    limit = settings().max_queued_jobs
    what = "this upload" if adding == 1 else f"the {adding} images of this upload"
    return (
        f"Too much work waiting: {waiting} of your jobs are queued or solving, and {what} "
        f"would pass the limit of {limit} (NOVA_MAX_QUEUED_JOBS). Try again when some have "
        "finished."
    )


def basename(filename: str | None) -> str:
    """The last component of a client-side path, split on both / and \\ (clients send both)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:256]


def new_submission(options: SubmissionOptions, **fields: object) -> Submission:
    """A new submission row; raises QueueFull when the caller has too much work waiting."""
    user_id = options.user.id if options.user else None
    address = None if options.user else options.client_address
    waiting = pending_work(user_id, address)
    if waiting + 1 > settings().max_queued_jobs:
        raise QueueFull(queue_full_message(waiting))
    visible = "y" if options.user is None else options.publicly_visible  # anonymous: public
    # An account signs its webhooks with its own secret; an anonymous upload gets one.
    anonymous_callback = options.callback_url is not None and options.user is None
    return Submission(
        callback_url=options.callback_url,
        callback_secret=webhooks.new_secret() if anonymous_callback else None,
        user_id=user_id,
        client_address=address,
        via_api=options.via_api,
        publicly_visible=visible,
        allow_commercial_use=options.allow_commercial_use,
        allow_modifications=options.allow_modifications,
        album_id=options.album.id if options.album else None,
        **options.params.as_dict(),
        **fields,
    )


def submit_file(path: Path, filename: str | None, options: SubmissionOptions) -> Submission:
    """Move an uploaded file (already on the data filesystem) into the store and queue it.

    The file is recognised again on the worker, which is where URL downloads end up too.
    """
    sha1 = storage().store_file(path)
    submission = new_submission(options, upload_hash=sha1, original_filename=basename(filename))
    db.session.add(submission)
    db.session.commit()
    _log_received(submission, "file")
    if not (settings().reuse_results and reuse_solution(submission)):
        jobqueue.enqueue_submission(submission.id)
    return submission


def submit_star_list(x: list[float], y: list[float], options: SubmissionOptions) -> Submission:
    """Store x/y positions sent as JSON (brightest first) as a FITS table and queue it."""
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="x", format="D", array=np.asarray(x, dtype=np.float64)),
            fits.Column(name="y", format="D", array=np.asarray(y, dtype=np.float64)),
        ]
    )
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    buffer.seek(0)
    sha1, _ = storage().store_stream(buffer)
    submission = new_submission(options, upload_hash=sha1, original_filename="json-xy")
    db.session.add(submission)
    db.session.commit()
    _log_received(submission, f"star list of {len(x)}")
    if not (settings().reuse_results and reuse_solution(submission)):
        jobqueue.enqueue_submission(submission.id)
    return submission


def _log_received(submission: Submission, what: str) -> None:
    # Never the URL's query string or the file's content: they may carry secrets.
    with logs.bind(submission_id=submission.id):
        log.info(
            "submission %s received: %s from %s",
            submission.id,
            what,
            f"user {submission.user_id}" if submission.user_id else "an anonymous client",
        )


def find_album(user: User, title: str) -> Album | None:
    """The caller's own album with this title (nova searched every user's albums)."""
    return db.session.scalars(
        select(Album)
        .where(access.owned_clause(Album, user), Album.title == title)
        .order_by(Album.id)
    ).first()


def submit_url(url: str, options: SubmissionOptions) -> Submission:
    submission = new_submission(options, url=url, original_filename=basename(urlparse(url).path))
    db.session.add(submission)
    db.session.commit()
    _log_received(submission, "URL")
    jobqueue.enqueue_submission(submission.id)
    return submission


def validate_url(url: str) -> str:
    """Accept only absolute http(s) URLs; raise ValueError with a message otherwise."""
    url = url.strip()
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("The URL must start with http:// or https:// and name a host.")
    if len(url) > 2048:
        raise ValueError("The URL is longer than 2048 characters.")
    return url


def quick_check_upload(path: Path) -> None:
    """Refuse a file that is certainly not solvable before a submission is created.

    Only its size and first bytes are looked at: the web process never decodes an upload
    (the worker does, in a sandbox). Archives pass: the worker recognises their members.
    """
    if archives.detect(path) is not None:
        return
    sniff_upload(path)


def bundle_files(files: Sequence[tuple[Path, str]], target: Path) -> Path:
    """Pack several uploaded files (path, name) into one tar: one submission, one image each."""
    with tarfile.open(target, "w") as archive:
        for path, name in files:
            archive.add(path, arcname=name or path.name, recursive=False)
    return target
