"""State changes: every function here changes rows and commits; queueing happens after commit."""

from __future__ import annotations

import io
import logging
import os
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from astropy.io import fits
from flask import current_app
from sqlalchemy import select, update

from . import archives, logs, queue, urlsafety
from .calibration import CalibrationNumbers
from .extensions import db
from .inputs import SUPPORTED_TEXT, PreparedInput, UnsupportedInput, prepare_input
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


def storage() -> Storage:
    return current_app.extensions["nova.storage"]


def basename(filename: str | None) -> str:
    """The last component of a client-side path, split on both / and \\ (clients send both)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:256]


def _new_submission(options: SubmissionOptions, **fields: object) -> Submission:
    visible = "y" if options.user is None else options.publicly_visible  # anonymous: public
    return Submission(
        user_id=options.user.id if options.user else None,
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

    Archives (zip, tar, optionally compressed) pass: the worker recognises their members.
    """
    if archives.detect(path) is not None:
        return
    work_dir = storage().make_work_dir("check-")
    try:
        prepare_input(
            path,
            work_dir,
            max_pixels=current_app.config["MAX_IMAGE_PIXELS"],
            max_uncompressed_bytes=current_app.config["MAX_CONTENT_LENGTH"],
        )
    finally:
        storage().discard(work_dir)


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
            started_at=now,
            finished_at=now,
            failure_reason=message,
        )
    )
    db.session.commit()


def process_submission(submission_id: int) -> list[int]:
    """Turn a submission into images and queued jobs; return the job ids to enqueue.

    A single image or star list yields one image; a tar or zip archive (optionally gzip or
    bzip2 compressed) one image per usable member. Anything else, a failed download or a
    hostile archive ends as a failed submission with a failed job, never as a crash.
    Safe to run twice: a submission that already has images is left as it is.
    """
    submission = db.session.get(Submission, submission_id)
    if submission is None or submission.user_images:
        return []
    submission.processing_started = utcnow()
    db.session.commit()
    try:
        job_ids = _process_submission(submission)
        log.info("submission %s processed: %d job(s) %s", submission_id, len(job_ids), job_ids)
        return job_ids
    except Exception:
        log.exception("processing submission %s failed", submission_id)
        db.session.rollback()
        submission = db.session.get(Submission, submission_id)
        if submission is None or submission.user_images:
            return []
        _fail_submission(
            submission,
            "Internal error while processing the upload; see the worker log.",
            submission.upload_hash,
        )
        return []


@dataclass(frozen=True)
class _Usable:
    """A recognised input, already in the upload store, that becomes one UserImage."""

    file_hash: str
    prepared: PreparedInput
    filename: str


def _process_submission(submission: Submission) -> list[int]:
    config = current_app.config
    started = time.monotonic()
    if submission.upload_hash is None:
        try:
            sha1, name = _download(
                submission.url or "", config["MAX_CONTENT_LENGTH"], config["DOWNLOAD_TIMEOUT"]
            )
        except (urlsafety.DownloadError, UploadTooLarge, TimeoutError, OSError) as exc:
            _fail_submission(submission, f"Failed to download {submission.url}: {exc}", None)
            return []
        submission.upload_hash = sha1
        submission.original_filename = name or submission.original_filename
    upload = storage().upload_path(submission.upload_hash)
    work_dir = storage().make_work_dir(f"sub-{submission.id}-")
    try:
        if archives.detect(upload) is None:
            try:
                prepared = _prepare(upload, work_dir, submission)
            except UnsupportedInput as exc:
                _fail_submission(submission, str(exc), submission.upload_hash)
                return []
            usable = [_Usable(submission.upload_hash, prepared, submission.original_filename)]
        else:
            try:
                usable, skipped = _unpack_archive(upload, work_dir, submission, started)
            except archives.ArchiveError as exc:
                _fail_submission(submission, str(exc), submission.upload_hash)
                return []
            if not usable:
                _fail_submission(submission, _nothing_usable(skipped), submission.upload_hash)
                return []
            for member in skipped:
                log.info("submission %s: %s %s", submission.id, member.name, member.reason)
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
    return [job.id for job in jobs]


def _prepare(path: Path, work_dir: Path, submission: Submission) -> PreparedInput:
    params = SolveParams.from_row(submission)
    config = current_app.config
    return prepare_input(
        path,
        work_dir,
        max_pixels=config["MAX_IMAGE_PIXELS"],
        max_uncompressed_bytes=config["MAX_CONTENT_LENGTH"],
        image_width=params.image_width,
        image_height=params.image_height,
    )


# The RQ timeout of a submission is 2 x DOWNLOAD_TIMEOUT + 120 s (queue.enqueue_submission);
# unpacking stops this long before it, so the submission fails with a reason instead.
_ARCHIVE_TIME_MARGIN = 30.0


def _unpack_archive(
    upload: Path, work_dir: Path, submission: Submission, started: float
) -> tuple[list[_Usable], list[archives.Member]]:
    """Store every usable member of the archive; return them and the refused ones.

    Raises archives.ArchiveError when the archive is corrupt or over a limit; members
    already stored stay in the content-addressed store, unreferenced (as for a refused
    upload), and no image is created.
    """
    config = current_app.config
    budget = 2 * config["DOWNLOAD_TIMEOUT"] + 120 - _ARCHIVE_TIME_MARGIN
    limits = archives.ArchiveLimits(
        max_members=config["MAX_ARCHIVE_MEMBERS"],
        max_total_bytes=config["MAX_ARCHIVE_BYTES"],
        max_member_bytes=config["MAX_CONTENT_LENGTH"],
        max_ratio=config["MAX_COMPRESSION_RATIO"],
        deadline=started + budget,
        time_limit=budget,
    )
    usable: list[_Usable] = []
    skipped: list[archives.Member] = []
    for index, member in enumerate(archives.iter_members(upload, work_dir, limits)):
        if member.path is None:
            skipped.append(member)
            continue
        member_dir = work_dir / f"prepare-{index:04d}"
        member_dir.mkdir()
        try:
            prepared = _prepare(member.path, member_dir, submission)
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
        usable.append(_Usable(storage().store_file(member.path), prepared, member.filename))
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
    return result.rowcount == 1


def set_job_stage(job_id: int, stage: str) -> None:
    db.session.execute(update(Job).where(Job.id == job_id).values(stage=stage))
    db.session.commit()


def finish_job(
    job_id: int,
    *,
    numbers: CalibrationNumbers | None,
    wcs_header: str | None,
    failure_reason: str | None,
    sources: int | None,
    objects: Sequence[str] = (),
) -> None:
    """Record the end of a job: a calibration and the objects in the field on success,
    the reason on failure."""
    job = db.session.get(Job, job_id)
    assert job is not None
    job.finished_at = utcnow()
    job.sources_detected = sources
    if numbers is not None and wcs_header is not None:
        job.status = JobStatus.SUCCESS
        job.stage = "done"
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
    with logs.bind(job_id=job_id, submission_id=job.user_image.submission_id):
        log.info(
            "job %s ended: %s%s (attempt %s, %s sources)",
            job_id,
            job.status,
            f", {job.failure_reason}" if job.status == JobStatus.FAILURE else "",
            job.attempts,
            sources,
        )


def prepare_image(image: UserImage, work_dir: Path) -> PreparedInput:
    """Recognise a stored image again and prepare what the engine (or a renderer) reads."""
    assert image.file_hash is not None
    params = SolveParams.from_row(image.submission)
    return prepare_input(
        storage().upload_path(image.file_hash),
        work_dir,
        max_pixels=current_app.config["MAX_IMAGE_PIXELS"],
        max_uncompressed_bytes=current_app.config["MAX_CONTENT_LENGTH"],
        image_width=params.image_width,
        image_height=params.image_height,
    )


def reuse_solution(submission: Submission) -> bool:
    """Answer an upload at once from an earlier solve of the same file with the same
    parameters: a new image and a job that is already a success, with the same calibration
    and products. Returns False when there is nothing to reuse (the upload is queued)."""
    params = SolveParams.from_row(submission)
    same_params = [
        getattr(Submission, name).is_(None) if value is None else getattr(Submission, name) == value
        for name, value in params.as_dict().items()
    ]
    earlier = db.session.scalars(
        select(Job)
        .join(UserImage, Job.user_image_id == UserImage.id)
        .join(Submission, UserImage.submission_id == Submission.id)
        .where(
            UserImage.file_hash == submission.upload_hash,
            Job.status == JobStatus.SUCCESS,
            UserImage.kind != "unsupported",
            *same_params,
        )
        .order_by(Job.id.desc())
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
        original_filename=submission.original_filename or old_image.original_filename,
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
    for product in source_dir.iterdir():
        if product.is_file() and not product.name.startswith("."):
            os.link(product, work_dir / product.name)  # products never change: share them
    storage().publish_job_dir(work_dir, job.id)
    db.session.commit()
    return True


def reconcile(max_attempts: int, heartbeat_seconds: int) -> dict[str, int]:
    """Find work the queue lost and put it back; give up on jobs that keep killing workers.

    - a job "solving" whose worker stopped sending heartbeats (killed, crashed, machine
      rebooted) goes back to "queued" and is enqueued again, at most
      ``max_attempts`` times in all, then ends as a failure with the reason;
    - queued jobs and unprocessed submissions missing from the queue are enqueued again.
    Safe to run from several workers at once: every change is a conditional update.
    """
    counts = {"retried": 0, "failed": 0, "requeued": 0}
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
            queue.enqueue_solve(job.id, force=True)
    from . import batches  # batches builds on this module

    # Frames of a batch are its tasks' work (batches.reconcile), never queued one by one.
    queued = select(Job.id).where(
        Job.status == JobStatus.QUEUED, Job.id.not_in(batches.frame_job_ids())
    )
    for job_id in db.session.scalars(queued).all():
        if not queue.is_waiting_or_running(f"solve-{job_id}"):
            counts["requeued"] += queue.enqueue_solve(job_id)
    unprocessed = select(Submission.id).where(
        Submission.processing_finished.is_(None),
        Submission.id.not_in(batches.frame_submission_ids()),
    )
    for submission_id in db.session.scalars(unprocessed).all():
        if not queue.is_waiting_or_running(f"submission-{submission_id}"):
            counts["requeued"] += queue.enqueue_submission(submission_id)
    counts["requeued"] += batches.reconcile()
    return counts


def heartbeat(job_id: int) -> None:
    """Say that the worker solving this job is alive (called from a thread: own connection)."""
    with db.engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))


def can_view(item: UserImage | Submission, user: User | None) -> bool:
    """Public images and submissions are visible to all; private ones only to their owner."""
    if item.publicly_visible == "y":
        return True
    return user is not None and item.user_id == user.id
