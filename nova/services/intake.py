"""Processing a submission in the worker: download, recognise, unpack archives, and create
its images and solve jobs (queued after the commit)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from nova.config import Settings
from nova.db.models import Album, Job, JobStatus, Submission, UserImage, utcnow
from nova.engine import archive_limits, archives, sandbox
from nova.engine.input_formats import SUPPORTED_TEXT, PreparedInput, UnsupportedInput
from nova.engine.inputs import prepare_input
from nova.engine.params import SolveParams
from nova.extensions import db, settings
from nova.infra import download, download_targets
from nova.infra.storage import UploadTooLarge
from nova.services import events, storage
from nova.services.jobs import announce_ended
from nova.services.submissions import basename, pending_work, queue_full_message

log = logging.getLogger(__name__)


def _download(url: str, max_bytes: int, timeout: float) -> tuple[str, str]:
    """Fetch ``url`` into the upload store: public addresses only (unless
    NOVA_URL_ALLOW_PRIVATE), redirects checked hop by hop, a size and a total-time limit.

    Returns (sha1, file name from the final URL); raises download_targets.DownloadError.
    """
    allow_private = bool(settings().url_allow_private)
    with download.open_url(
        url, max_bytes=max_bytes, timeout=timeout, allow_private=allow_private
    ) as body:
        sha1, _ = storage().store_stream(body, max_bytes=max_bytes)  # type: ignore[arg-type]
        final_url = body.url
    return sha1, basename(urlparse(final_url).path)


def fail_submission(submission: Submission, message: str, file_hash: str | None) -> None:
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
    announce_ended(submission)


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
        fail_submission(
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
    config = settings()
    started = time.monotonic()
    if submission.upload_hash is None:
        try:
            sha1, name = _download(
                submission.url or "", config.max_upload_bytes, config.download_timeout
            )
        except (download_targets.DownloadError, UploadTooLarge, TimeoutError, OSError) as exc:
            fail_submission(submission, f"Failed to download {submission.url}: {exc}", None)
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
                fail_submission(submission, str(exc), submission.upload_hash)
                return Recognised([])
            usable = [_Usable(submission.upload_hash, single, submission.original_filename)]
        else:
            try:
                found, skipped = _unpack_archive(upload, work_dir, submission, started)
            except archive_limits.ArchiveError as exc:
                fail_submission(submission, str(exc), submission.upload_hash)
                return Recognised([])
            if not found:
                fail_submission(submission, _nothing_usable(skipped), submission.upload_hash)
                return Recognised([])
            for member in skipped:
                log.info("submission %s: %s %s", submission.id, member.name, member.reason)
            waiting = pending_work(
                submission.user_id, submission.client_address, exclude=submission.id
            )
            if waiting + len(found) > config.max_queued_jobs:
                # Each image is a job: an archive counts as many uploads as it holds.
                message = queue_full_message(waiting, len(found))
                fail_submission(submission, message, submission.upload_hash)
                return Recognised([])
            usable = [
                _Usable(storage().store_file(item.path), item.prepared, item.filename)
                for item in found
            ]
    finally:
        storage().discard(work_dir)
    jobs = _add_images(submission, usable)
    submission.processing_finished = utcnow()
    db.session.commit()
    events.submission_changed(submission.id)
    return Recognised([job.id for job in jobs], single if prepare_into is not None else None)


def _add_images(submission: Submission, usable: list[_Usable]) -> list[Job]:
    """An image and its queued job for each usable input (in the submission's album, if any)."""
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
    return jobs


def input_limits(config: Settings | None = None) -> dict[str, int]:
    """The bounds every decoded input is held to (pixels, bytes, ratio, stars), from the
    app's settings or ``config`` (``nova solve`` runs without an app)."""
    config = settings() if config is None else config
    return {
        "max_pixels": config.max_image_pixels,
        "max_uncompressed_bytes": config.max_upload_bytes,
        "max_ratio": config.max_compression_ratio,
        "max_stars": config.max_stars,
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


def decode_limits(wall_seconds: float, config: Settings | None = None) -> sandbox.DecodeLimits:
    """The sandbox's NOVA_DECODE_* limits (the app's settings or ``config``) with this much
    wall-clock time."""
    config = settings() if config is None else config
    return sandbox.limits_for(config.decode_memory_mb, config.decode_cpu_seconds, wall_seconds)


def prepare_sandboxed(
    path: Path, work_dir: Path, params: SolveParams, wall_seconds: float
) -> PreparedInput:
    """``prepare_input`` in a child process under NOVA_DECODE_* limits and ``wall_seconds``;
    a limit that stops it is an UnsupportedInput with the reason, like any refusal."""
    limits = decode_limits(wall_seconds)
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


# The RQ timeout of a submission is 2 x DOWNLOAD_TIMEOUT + 120 s (jobqueue.enqueue_submission);
# unpacking and reading stop this long before it, so the submission fails with a reason.
_ARCHIVE_TIME_MARGIN = 30.0


def _processing_budget() -> float:
    """Seconds a submission may take in all: download, unpacking, reading every file."""
    return 2 * settings().download_timeout + 120 - _ARCHIVE_TIME_MARGIN


def _deadline(started: float) -> float:
    return started + _processing_budget()


def _unpack_archive(
    upload: Path, work_dir: Path, submission: Submission, started: float
) -> tuple[list[_Found], list[archive_limits.Member]]:
    """Unpack and recognise every member of the archive into ``work_dir``; return the
    usable ones and the refused ones.

    Raises archive_limits.ArchiveError when the archive is corrupt or over a limit; nothing is
    stored then (the work directory goes), and no image is created.
    """
    config = settings()
    budget = _processing_budget()
    limits = archive_limits.ArchiveLimits(
        max_members=config.max_archive_members,
        max_total_bytes=config.max_archive_bytes,
        max_member_bytes=config.max_upload_bytes,
        max_ratio=config.max_compression_ratio,
        deadline=started + budget,
        time_limit=budget,
    )
    usable: list[_Found] = []
    skipped: list[archive_limits.Member] = []
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


def _nothing_usable(skipped: list[archive_limits.Member]) -> str:
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


def prepare_image(image: UserImage, work_dir: Path, wall_seconds: float) -> PreparedInput:
    """Recognise a stored image again (sandboxed) and prepare what the engine or a renderer
    reads, within ``wall_seconds``."""
    assert image.file_hash is not None
    params = SolveParams.from_row(image.submission)
    return prepare_sandboxed(storage().upload_path(image.file_hash), work_dir, params, wall_seconds)
