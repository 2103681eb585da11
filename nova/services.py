"""State changes: every function here changes rows and commits; queueing happens after commit."""

from __future__ import annotations

import io
import logging
import os
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import redis
from astropy.io import fits
from flask import current_app
from sqlalchemy import func, select, update

from . import archives, events, logs, metrics, queue, sandbox, status, urlsafety, webhooks
from .calibration import CalibrationNumbers
from .extensions import db
from .inputs import (
    SUPPORTED_TEXT,
    PreparedInput,
    UnsupportedInput,
    prepare_input,
    sniff_upload,
)
from .models import (
    Album,
    Calibration,
    ImageTag,
    Job,
    JobStatus,
    SkyObject,
    Submission,
    User,
    UserImage,
    utcnow,
)
from .params import SolveParams
from .redaction import without_server_paths
from .solver import ANNOTATIONS_NAME, AXY_NAME, CORR_NAME, LOG_NAME, RDLS_NAME, WCS_NAME
from .storage import Storage, UploadTooLarge

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
    callback_url: str | None = None  # where to POST each job's end (nova.webhooks)


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
    limit = current_app.config["MAX_QUEUED_JOBS"]
    what = "this upload" if adding == 1 else f"the {adding} images of this upload"
    return (
        f"Too much work waiting: {waiting} of your jobs are queued or solving, and {what} "
        f"would pass the limit of {limit} (NOVA_MAX_QUEUED_JOBS). Try again when some have "
        "finished."
    )


def storage() -> Storage:
    return current_app.extensions["nova.storage"]


def basename(filename: str | None) -> str:
    """The last component of a client-side path, split on both / and \\ (clients send both)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:256]


def _new_submission(options: SubmissionOptions, **fields: object) -> Submission:
    """A new submission row; raises QueueFull when the caller has too much work waiting."""
    user_id = options.user.id if options.user else None
    address = None if options.user else options.client_address
    waiting = pending_work(user_id, address)
    if waiting + 1 > current_app.config["MAX_QUEUED_JOBS"]:
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
    submission = _new_submission(options, upload_hash=sha1, original_filename=basename(filename))
    db.session.add(submission)
    db.session.commit()
    _log_received(submission, "file")
    if not (current_app.config["REUSE_RESULTS"] and reuse_solution(submission)):
        queue.enqueue_submission(submission.id)
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
    submission = _new_submission(options, upload_hash=sha1, original_filename="json-xy")
    db.session.add(submission)
    db.session.commit()
    _log_received(submission, f"star list of {len(x)}")
    if not (current_app.config["REUSE_RESULTS"] and reuse_solution(submission)):
        queue.enqueue_submission(submission.id)
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
        select(Album).where(Album.user_id == user.id, Album.title == title).order_by(Album.id)
    ).first()


def submit_url(url: str, options: SubmissionOptions) -> Submission:
    submission = _new_submission(options, url=url, original_filename=basename(urlparse(url).path))
    db.session.add(submission)
    db.session.commit()
    _log_received(submission, "URL")
    queue.enqueue_submission(submission.id)
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


# -- worker side ---------------------------------------------------------------------------


def _download(url: str, max_bytes: int, timeout: float) -> tuple[str, str]:
    """Fetch ``url`` into the upload store: public addresses only (unless
    NOVA_URL_ALLOW_PRIVATE), redirects checked hop by hop, a size and a total-time limit.

    Returns (sha1, file name from the final URL); raises urlsafety.DownloadError.
    """
    allow_private = bool(current_app.config.get("URL_ALLOW_PRIVATE", False))
    with urlsafety.open_url(
        url, max_bytes=max_bytes, timeout=timeout, allow_private=allow_private
    ) as body:
        sha1, _ = storage().store_stream(body, max_bytes=max_bytes)  # type: ignore[arg-type]
        final_url = body.url
    return sha1, basename(urlparse(final_url).path)


def _fail_submission(submission: Submission, message: str, file_hash: str | None) -> None:
    """Record a submission that yields nothing solvable, with a failed job so pollers stop."""
    now = utcnow()
    submission.error_message = message
    submission.processing_finished = now
    image = UserImage(
        submission=submission,
        user_id=submission.user_id,
        file_hash=file_hash,
        kind="unsupported",
        width=0,
        height=0,
        original_filename=submission.original_filename,
        publicly_visible=submission.publicly_visible,
    )
    db.session.add(image)
    db.session.add(
        Job(
            user_image=image,
            status=JobStatus.FAILURE,
            stage="failed",
            queued_at=now,  # the column default would be later than finished_at
            started_at=now,
            finished_at=now,
            failure_reason=message,
        )
    )
    db.session.commit()
    _announce_ended(submission)


def process_submission(submission_id: int) -> list[int]:
    """Turn a submission into images and queued jobs; return the job ids to enqueue.

    A single image or star list yields one image; a tar or zip archive (optionally gzip or
    bzip2 compressed) one image per usable member. Anything else, a failed download or a
    hostile archive ends as a failed submission with a failed job, never as a crash.
    Safe to run twice: a submission that already has images is left as it is.
    """
    return recognise_submission(submission_id).job_ids


@dataclass(frozen=True)
class Recognised:
    """What recognising a submission gave: its queued jobs and, when the caller asked for it
    and the upload was a single file, that file prepared in the caller's directory (what
    ``prepare_image`` of its image would prepare again)."""

    job_ids: list[int]
    prepared: PreparedInput | None = None


def recognise_submission(submission_id: int, prepare_into: Path | None = None) -> Recognised:
    """``process_submission``; with ``prepare_into`` (a work directory the caller owns and
    discards), a single file's prepared input is kept there, so that a caller solving it at
    once (a batch) does not read it a second time in a second sandbox."""
    submission = db.session.get(Submission, submission_id)
    if submission is None or submission.user_images:
        return Recognised([])
    submission.processing_started = utcnow()
    # Counted before the work: a worker killed while reading it leaves the count behind,
    # and the reconciler gives up after NOVA_MAX_ATTEMPTS, as for jobs.
    submission.attempts = (submission.attempts or 0) + 1
    db.session.commit()
    try:
        recognised = _process_submission(submission, prepare_into)
        job_ids = recognised.job_ids
        log.info("submission %s processed: %d job(s) %s", submission_id, len(job_ids), job_ids)
        return recognised
    except Exception:
        log.exception("processing submission %s failed", submission_id)
        db.session.rollback()
        submission = db.session.get(Submission, submission_id)
        if submission is None or submission.user_images:
            return Recognised([])
        _fail_submission(
            submission,
            "Internal error while processing the upload; see the worker log.",
            submission.upload_hash,
        )
        return Recognised([])


@dataclass(frozen=True)
class _Usable:
    """A recognised input, already in the upload store, that becomes one UserImage."""

    file_hash: str
    prepared: PreparedInput
    filename: str


@dataclass(frozen=True)
class _Found:
    """A usable archive member, still in the work directory: stored only once the whole
    archive is accepted, so a refused archive leaves nothing in the upload store."""

    path: Path
    prepared: PreparedInput
    filename: str


def _process_submission(submission: Submission, prepare_into: Path | None) -> Recognised:
    config = current_app.config
    started = time.monotonic()
    if submission.upload_hash is None:
        try:
            sha1, name = _download(
                submission.url or "", config["MAX_CONTENT_LENGTH"], config["DOWNLOAD_TIMEOUT"]
            )
        except (urlsafety.DownloadError, UploadTooLarge, TimeoutError, OSError) as exc:
            _fail_submission(submission, f"Failed to download {submission.url}: {exc}", None)
            return Recognised([])
        submission.upload_hash = sha1
        submission.original_filename = name or submission.original_filename
    upload = storage().upload_path(submission.upload_hash)
    work_dir = storage().make_work_dir(f"sub-{submission.id}-")
    single: PreparedInput | None = None
    try:
        if archives.detect(upload) is None:
            try:
                single = _prepare(upload, prepare_into or work_dir, submission, _deadline(started))
            except UnsupportedInput as exc:
                _fail_submission(submission, str(exc), submission.upload_hash)
                return Recognised([])
            usable = [_Usable(submission.upload_hash, single, submission.original_filename)]
        else:
            try:
                found, skipped = _unpack_archive(upload, work_dir, submission, started)
            except archives.ArchiveError as exc:
                _fail_submission(submission, str(exc), submission.upload_hash)
                return Recognised([])
            if not found:
                _fail_submission(submission, _nothing_usable(skipped), submission.upload_hash)
                return Recognised([])
            for member in skipped:
                log.info("submission %s: %s %s", submission.id, member.name, member.reason)
            waiting = pending_work(
                submission.user_id, submission.client_address, exclude=submission.id
            )
            if waiting + len(found) > config["MAX_QUEUED_JOBS"]:
                # Each image is a job: an archive counts as many uploads as it holds.
                message = queue_full_message(waiting, len(found))
                _fail_submission(submission, message, submission.upload_hash)
                return Recognised([])
            usable = [
                _Usable(storage().store_file(item.path), item.prepared, item.filename)
                for item in found
            ]
    finally:
        storage().discard(work_dir)
    jobs = []
    album = db.session.get(Album, submission.album_id) if submission.album_id else None
    for item in usable:
        image = UserImage(
            submission=submission,
            user_id=submission.user_id,
            file_hash=item.file_hash,
            kind=item.prepared.kind,
            width=item.prepared.width,
            height=item.prepared.height,
            fits_extension=item.prepared.fits_extension,
            original_filename=item.filename,
            publicly_visible=submission.publicly_visible,
        )
        job = Job(user_image=image)
        db.session.add_all([image, job])
        if album is not None:
            album.images.append(image)
        jobs.append(job)
    submission.processing_finished = utcnow()
    db.session.commit()
    events.submission_changed(submission.id)
    return Recognised([job.id for job in jobs], single if prepare_into is not None else None)


def input_limits(config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The bounds every decoded input is held to (pixels, bytes, ratio, stars), from the
    app's settings or ``config`` (``nova solve`` runs without an app)."""
    config = current_app.config if config is None else config
    return {
        "max_pixels": config["MAX_IMAGE_PIXELS"],
        "max_uncompressed_bytes": config["MAX_CONTENT_LENGTH"],
        "max_ratio": config["MAX_COMPRESSION_RATIO"],
        "max_stars": config["MAX_STARS"],
    }


def preparer(path: Path, work_dir: Path, params: SolveParams) -> Callable[[], PreparedInput]:
    """``prepare_input`` of ``path`` with the app's bounds, to be called inside a sandbox
    (``prepare_sandboxed``, or a picture build that runs whole in one)."""
    return partial(
        prepare_input,
        path,
        work_dir,
        image_width=params.image_width,
        image_height=params.image_height,
        **input_limits(),
    )


def image_preparer(image: UserImage, work_dir: Path) -> Callable[[], PreparedInput]:
    """The preparer of a stored image (see ``preparer``)."""
    assert image.file_hash is not None
    path = storage().upload_path(image.file_hash)
    return preparer(path, work_dir, SolveParams.from_row(image.submission))


def prepare_sandboxed(
    path: Path, work_dir: Path, params: SolveParams, wall_seconds: float
) -> PreparedInput:
    """``prepare_input`` in a child process under NOVA_DECODE_* limits and ``wall_seconds``;
    a limit that stops it is an UnsupportedInput with the reason, like any refusal."""
    limits = sandbox.limits_from_config(current_app.config, wall_seconds)
    try:
        return sandbox.run_limited(preparer(path, work_dir, params), limits=limits)
    except sandbox.DecodeLimitExceeded as exc:
        raise UnsupportedInput(str(exc)) from None
    except sandbox.DecodeCrashed as exc:
        log.warning("reading %s failed: %s", path.name, exc)
        raise UnsupportedInput("The file could not be read (its decoder failed).") from None


def _prepare(path: Path, work_dir: Path, submission: Submission, deadline: float) -> PreparedInput:
    params = SolveParams.from_row(submission)
    return prepare_sandboxed(path, work_dir, params, deadline - time.monotonic())


# The RQ timeout of a submission is 2 x DOWNLOAD_TIMEOUT + 120 s (queue.enqueue_submission);
# unpacking and reading stop this long before it, so the submission fails with a reason.
_ARCHIVE_TIME_MARGIN = 30.0


def _processing_budget() -> float:
    """Seconds a submission may take in all: download, unpacking, reading every file."""
    return 2 * current_app.config["DOWNLOAD_TIMEOUT"] + 120 - _ARCHIVE_TIME_MARGIN


def _deadline(started: float) -> float:
    return started + _processing_budget()


def _unpack_archive(
    upload: Path, work_dir: Path, submission: Submission, started: float
) -> tuple[list[_Found], list[archives.Member]]:
    """Unpack and recognise every member of the archive into ``work_dir``; return the
    usable ones and the refused ones.

    Raises archives.ArchiveError when the archive is corrupt or over a limit; nothing is
    stored then (the work directory goes), and no image is created.
    """
    config = current_app.config
    budget = _processing_budget()
    limits = archives.ArchiveLimits(
        max_members=config["MAX_ARCHIVE_MEMBERS"],
        max_total_bytes=config["MAX_ARCHIVE_BYTES"],
        max_member_bytes=config["MAX_CONTENT_LENGTH"],
        max_ratio=config["MAX_COMPRESSION_RATIO"],
        deadline=started + budget,
        time_limit=budget,
    )
    usable: list[_Found] = []
    skipped: list[archives.Member] = []
    for index, member in enumerate(archives.iter_members(upload, work_dir, limits)):
        if member.path is None:
            skipped.append(member)
            continue
        member_dir = work_dir / f"prepare-{index:04d}"
        member_dir.mkdir()
        try:
            prepared = _prepare(member.path, member_dir, submission, started + budget)
        except UnsupportedInput as exc:
            skipped.append(replace(member, reason=str(exc)))
            member.path.unlink(missing_ok=True)
            continue
        except Exception:  # a reader bug on a hostile member must not lose the others
            log.exception("submission %s: reading member %s failed", submission.id, member.name)
            skipped.append(replace(member, reason="skipped: it could not be read"))
            member.path.unlink(missing_ok=True)
            continue
        finally:
            storage().discard(member_dir)
        # prepare_input may have pointed into member_dir (a decompressed copy); only the
        # kind, size and FITS extension are kept, and the stored file is the member itself.
        usable.append(_Found(member.path, prepared, member.filename))
    return usable, skipped


_MAX_LISTED = 20


def _nothing_usable(skipped: list[archives.Member]) -> str:
    if not skipped:
        return "The archive holds no files."
    parts = []
    for member in skipped[:_MAX_LISTED]:
        reason = (member.reason or "").replace(SUPPORTED_TEXT, "").strip().rstrip(".")
        parts.append(f"{member.name}: {reason}")
    if len(skipped) > _MAX_LISTED:
        parts.append(f"and {len(skipped) - _MAX_LISTED} more")
    return (
        "The archive holds no image or star list that can be solved ("
        + "; ".join(parts)
        + "). "
        + SUPPORTED_TEXT
    )


def claim_job(job_id: int) -> bool:
    """Move a queued job to solving; False if another delivery already took it."""
    result = db.session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.SOLVING,
            stage="starting",
            started_at=utcnow(),
            heartbeat_at=utcnow(),
            attempts=Job.attempts + 1,
        )
    )
    db.session.commit()
    if result.rowcount != 1:
        return False
    events.job_changed(job_id)
    return True


def set_job_stage(job_id: int, stage: str) -> None:
    db.session.execute(update(Job).where(Job.id == job_id).values(stage=stage))
    db.session.commit()
    events.job_changed(job_id)


def finish_job(
    job_id: int,
    *,
    numbers: CalibrationNumbers | None,
    wcs_header: str | None,
    failure_reason: str | None,
    sources: int | None,
    objects: Sequence[str] = (),
    hints: dict[str, Any] | None = None,
    stage_seconds: Mapping[str, float] | None = None,
    quality: dict[str, Any] | None = None,
) -> None:
    """Record the end of a job: a calibration, its quality and the objects in the field on
    success, the reason on failure; where its hints came from either way. A job that ended
    already (cancelled by its owner while solving) keeps its end. ``stage_seconds``: the
    time spent in each stage, for the metrics."""
    job = db.session.get(Job, job_id)
    if job is None or job.is_finished:
        log.info("job %s ended already (cancelled or deleted); result not recorded", job_id)
        db.session.rollback()
        return
    job.finished_at = utcnow()
    job.sources_detected = sources
    job.hints = hints
    if numbers is not None and wcs_header is not None:
        job.status = JobStatus.SUCCESS
        job.stage = "done"
        job.quality = quality
        db.session.add(Calibration(job=job, wcs_header=wcs_header, **numbers.__dict__))
        image = job.user_image
        # A re-solve replaces what the machine said about the field before.
        for old in [t for t in image.tags if t.machine] + list(image.sky_objects):
            db.session.delete(old)
        for name in objects:
            db.session.add(ImageTag(user_image_id=image.id, text=name, machine=True))
            db.session.add(SkyObject(user_image_id=image.id, name=name))
    else:
        job.status = JobStatus.FAILURE
        job.stage = "failed"
        job.failure_reason = failure_reason or "The solve failed."
    db.session.commit()
    if job.started_at is not None:
        # The queue-position estimates (nova.status) come from recent durations per queue.
        image = job.user_image
        quick = queue.is_quick(SolveParams.from_row(image.submission), image.kind)
        status.record_duration(
            queue.QUICK_SOLVE_QUEUE if quick else queue.SOLVE_QUEUE,
            (job.finished_at - job.started_at).total_seconds(),
        )
    job_ended(job_id, stage_seconds=stage_seconds)
    with logs.bind(job_id=job_id, submission_id=job.user_image.submission_id):
        log.info(
            "job %s ended: %s%s (attempt %s, %s sources)",
            job_id,
            job.status,
            f", {job.failure_reason}" if job.status == JobStatus.FAILURE else "",
            job.attempts,
            sources,
        )


def job_ended(
    job_id: int, *, stage_seconds: Mapping[str, float] | None = None, ran: bool = True
) -> None:
    """After the commit that ended a job: count it in the metrics, tell its watchers, queue
    its webhook. Every end of a job (solved, failed, given up, cancelled) comes through here.
    ``ran=False``: no worker ran it (answered at once, or given up), so it has no timings."""
    job = db.session.get(Job, job_id)
    if job is not None:
        timings = (
            {
                "queued_at": job.queued_at,
                "started_at": job.started_at,
                "finished_at": job.finished_at,
            }
            if ran
            else {}
        )
        metrics.job_ended(job.status, stage_seconds=stage_seconds, **timings)
    events.job_changed(job_id)
    webhooks.job_ended(job_id)


def _announce_ended(submission: Submission) -> None:
    """``job_ended`` for the jobs a submission was born with, already ended (a refused
    upload's failed job, an answer reused from an earlier solve)."""
    for image in submission.user_images:
        for job in image.jobs:
            job_ended(job.id, ran=False)
    events.submission_changed(submission.id)


def cancel_job(job: Job) -> bool:
    """End a queued or solving job as cancelled by its owner, and stop its solve
    (queue.cancel_solve). False when it had ended already (nothing to cancel)."""
    from .cancellation import CANCEL_REASON

    changed = db.session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_((JobStatus.QUEUED, JobStatus.SOLVING)))
        .values(
            status=JobStatus.FAILURE,
            stage="failed",
            finished_at=utcnow(),
            failure_reason=CANCEL_REASON,
        )
    ).rowcount
    db.session.commit()
    db.session.refresh(job)
    if not changed:
        return False
    try:
        queue.cancel_solve(job.id)
    except redis.exceptions.RedisError as exc:
        # The row has ended: a worker that takes the entry finds it so and does nothing.
        log.warning("could not tell the queue to stop job %s: %s", job.id, exc)
    with logs.bind(job_id=job.id, submission_id=job.user_image.submission_id):
        log.info("job %s ended: %s", job.id, CANCEL_REASON)
    job_ended(job.id)
    return True


def prepare_image(image: UserImage, work_dir: Path, wall_seconds: float) -> PreparedInput:
    """Recognise a stored image again (sandboxed) and prepare what the engine or a renderer
    reads, within ``wall_seconds``."""
    assert image.file_hash is not None
    params = SolveParams.from_row(image.submission)
    return prepare_sandboxed(storage().upload_path(image.file_hash), work_dir, params, wall_seconds)


# What an answer from an earlier solve takes of it: the engine's own products. Never its
# log (it names the other job's directory and id) nor pictures and files drawn for it (the
# KMZ carries the other upload's file name); those are built again for the copy.
REUSED_PRODUCTS = (AXY_NAME, WCS_NAME, CORR_NAME, RDLS_NAME, ANNOTATIONS_NAME)


def reuse_solution(submission: Submission) -> bool:
    """Answer an upload at once from an earlier solve of the same file with the same
    parameters: a new image and a job that is already a success, with the same calibration
    and engine products. Only the uploader's own solves and public ones are reused: a
    private solve of someone else is neither copied nor revealed by an instant answer.
    Returns False when there is nothing to reuse (the upload is queued)."""
    params = SolveParams.from_row(submission)
    same_params = [
        getattr(Submission, name).is_(None) if value is None else getattr(Submission, name) == value
        for name, value in params.as_dict().items()
    ]
    reusable = UserImage.publicly_visible == "y"
    if submission.user_id is not None:
        reusable = reusable | (UserImage.user_id == submission.user_id)
    earlier = db.session.scalars(
        select(Job)
        .join(UserImage, Job.user_image_id == UserImage.id)
        .join(Submission, UserImage.submission_id == Submission.id)
        .where(
            UserImage.file_hash == submission.upload_hash,
            Job.status == JobStatus.SUCCESS,
            UserImage.kind != "unsupported",
            reusable,
            *same_params,
        )
        .order_by(Job.finished_at.desc())  # the newest solve (ids are random)
        .limit(1)
    ).first()
    if earlier is None or earlier.calibration is None:
        return False
    source_dir = storage().job_dir(earlier.id)
    if not (source_dir / "wcs.fits").exists():
        return False
    old_image = earlier.user_image
    now = utcnow()
    image = UserImage(
        submission=submission,
        user_id=submission.user_id,
        file_hash=old_image.file_hash,
        kind=old_image.kind,
        width=old_image.width,
        height=old_image.height,
        fits_extension=old_image.fits_extension,
        original_filename=submission.original_filename,
        publicly_visible=submission.publicly_visible,
    )
    job = Job(
        user_image=image,
        status=JobStatus.SUCCESS,
        stage="done",
        queued_at=now,
        started_at=now,
        finished_at=now,
        sources_detected=earlier.sources_detected,
        hints=earlier.hints,
    )
    submission.processing_started = submission.processing_finished = now
    db.session.add_all([image, job])
    db.session.flush()  # ids for the copies below
    calibration = earlier.calibration
    db.session.add(
        Calibration(
            job=job,
            **{
                column.name: getattr(calibration, column.name)
                for column in Calibration.__table__.columns
                if column.name not in ("id", "job_id")
            },
        )
    )
    for tag in old_image.tags:
        if tag.machine:
            db.session.add(ImageTag(user_image_id=image.id, text=tag.text, machine=True))
    for obj in old_image.sky_objects:
        db.session.add(SkyObject(user_image_id=image.id, name=obj.name))
    work_dir = storage().make_work_dir(f"reuse-{job.id}-")
    for name in REUSED_PRODUCTS:
        product = source_dir / name
        if product.is_file():
            os.link(product, work_dir / name)  # products never change: share them
    (work_dir / LOG_NAME).write_text(
        "Answered at once from an earlier solve of the same file with the same parameters; "
        "no engine ran for this job.\n"
    )
    storage().publish_job_dir(work_dir, job.id)
    db.session.commit()
    _announce_ended(submission)
    return True


def reconcile(max_attempts: int, heartbeat_seconds: int) -> dict[str, int]:
    """Find work the queue lost and put it back; give up on jobs that keep killing workers.

    - a job "solving" whose worker stopped sending heartbeats (killed, crashed, machine
      rebooted) goes back to "queued" and is enqueued again, at most
      ``max_attempts`` times in all, then ends as a failure with the reason;
    - queued jobs and unprocessed submissions missing from the queue are enqueued again.
    Safe to run from several workers at once: every change is a conditional update.
    """
    counts = {"retried": 0, "failed": 0, "requeued": 0, "swept": 0}
    # A solving worker refreshes its heartbeat every heartbeat_seconds; three missed beats
    # (and some slack for a busy database) mean it is gone.
    lost_before = utcnow() - timedelta(seconds=3 * heartbeat_seconds + 10)
    for job in db.session.scalars(select(Job).where(Job.status == JobStatus.SOLVING)).all():
        heartbeat = job.heartbeat_at or job.started_at or job.queued_at
        if heartbeat > lost_before:
            continue  # its worker is alive (or only just started)
        retry = job.attempts < max_attempts
        if not retry:
            reason = (
                f"The worker stopped (killed or crashed) while solving, {job.attempts} "
                "times; giving up."
            )
            changed = db.session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == JobStatus.SOLVING)
                .values(
                    status=JobStatus.FAILURE,
                    stage="failed",
                    finished_at=utcnow(),
                    failure_reason=reason,
                )
            ).rowcount
            counts["failed"] += changed
        else:
            changed = db.session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == JobStatus.SOLVING)
                .values(status=JobStatus.QUEUED, stage="queued")
            ).rowcount
            counts["retried"] += changed
        db.session.commit()
        if changed and retry:
            events.job_changed(job.id)
            queue.enqueue_solve(job.id, force=True)
        elif changed:
            job_ended(job.id, ran=False)  # given up: its worker's timings died with it
    from . import batches  # batches builds on this module

    # Frames of a batch are its tasks' work (batches.reconcile), never queued one by one.
    queued = select(Job.id).where(
        Job.status == JobStatus.QUEUED, Job.id.not_in(batches.frame_job_ids())
    )
    for job_id in db.session.scalars(queued).all():
        if not queue.is_waiting_or_running(f"solve-{job_id}"):
            counts["requeued"] += queue.enqueue_solve(job_id)
    unprocessed = select(Submission).where(
        Submission.processing_finished.is_(None),
        Submission.id.not_in(batches.frame_submission_ids()),
    )
    for submission in db.session.scalars(unprocessed).all():
        if queue.is_waiting_or_running(f"submission-{submission.id}"):
            continue
        if submission.attempts >= max_attempts and not submission.user_images:
            _fail_submission(
                submission,
                f"The worker stopped (killed or crashed) while reading this upload, "
                f"{submission.attempts} times; giving up.",
                submission.upload_hash,
            )
            counts["failed"] += 1
            continue
        counts["requeued"] += queue.enqueue_submission(submission.id)
    counts["requeued"] += batches.reconcile()
    counts["swept"] = sweep_tmp(_longest_work_seconds())
    return counts


def _longest_work_seconds() -> float:
    """The longest any task may run (its RQ timeout): older work directories are orphans."""
    config = current_app.config
    return max(config["SOLVE_TIME_LIMIT"] + 120, 2 * config["DOWNLOAD_TIMEOUT"] + 120)


# Slack on top of the longest task before a work directory counts as abandoned.
_SWEEP_MARGIN_SECONDS = 600


def sweep_tmp(longest_work_seconds: float) -> int:
    """Delete what killed work left in tmp/ (a work horse killed mid-solve cannot clean up):
    entries untouched for longer than any task may run. Returns how many went."""
    cutoff = time.time() - longest_work_seconds - _SWEEP_MARGIN_SECONDS
    swept = 0
    for entry in storage().tmp.iterdir():
        try:
            if entry.lstat().st_mtime >= cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                storage().discard(entry)
            else:
                entry.unlink(missing_ok=True)
        except OSError as exc:  # removed meanwhile by its owner, or not ours to remove
            log.warning("could not sweep %s: %s", entry.name, exc)
            continue
        swept += 1
    return swept


def job_log_text(job_id: int, max_chars: int | None = None) -> str | None:
    """A job's log as users see it: the last ``max_chars`` of it, without server paths (the
    engine's log names its work directory, index files and programs); None without a log."""
    path = storage().job_file(job_id, LOG_NAME)
    if path is None:
        return None
    with path.open("rb") as handle:
        if max_chars is not None:
            handle.seek(max(0, path.stat().st_size - max_chars))
        text = handle.read().decode("utf-8", "replace")
    return without_server_paths(text)


def heartbeat(job_id: int) -> None:
    """Say that the worker solving this job is alive (called from a thread: own connection)."""
    with db.engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))
