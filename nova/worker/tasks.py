"""RQ job functions: they orchestrate services, the solver and storage for one id each.

They run in an RQ work horse (a fork of ``nova worker``); each takes only an id, so a
redelivered or duplicated queue entry finds the row already handled and does nothing.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, current_app

from nova import logs
from nova.db.models import Job, UserImage
from nova.engine import header_files, hints, job_files, process, quality, solver, warm_engine
from nova.engine.calibration import CalibrationNumbers, compute_calibration, read_wcs_header
from nova.engine.input_formats import PreparedInput, UnsupportedInput
from nova.engine.params import SolveParams
from nova.extensions import db, settings
from nova.infra import cancellation, jobqueue, metrics
from nova.services import intake, jobs, queueing, storage, webhooks
from nova.worker.context import app_context

log = logging.getLogger(__name__)


def process_submission_job(submission_id: int) -> None:
    with app_context():
        for job_id in intake.process_submission(submission_id):
            queueing.enqueue_solve(job_id)
        db.session.remove()


def solve_job(job_id: int) -> None:
    with app_context():
        stop = threading.Event()
        beating = threading.Thread(
            target=_heartbeat, args=(job_id, stop, current_app._get_current_object()), daemon=True
        )
        beating.start()
        try:
            with (
                cancellation.watching(jobqueue.redis_connection(), job_id),
                process.tracked_by(cancellation),
            ):
                _solve(job_id)
        except cancellation.JobCancelled:
            # jobs.cancel_job ended the row already; the engine's processes are gone.
            log.info("job %s stopped: %s", job_id, cancellation.CANCEL_REASON)
        finally:
            stop.set()
            beating.join(timeout=5)
            db.session.remove()


def deliver_webhook(job_id: int) -> None:
    """One webhook try for a job's end (nova.services.webhooks), in the worker's app."""
    with app_context():
        webhooks.deliver_job(job_id)


def _heartbeat(job_id: int, stop: threading.Event, app: Flask) -> None:
    """Tell the database every few seconds that this job's worker is alive; the reconciler
    retries a solving job whose heartbeats stop (worker killed, machine gone)."""
    interval = settings(app).heartbeat_seconds
    with app.app_context():
        while not stop.wait(interval):
            try:
                jobs.heartbeat(job_id)
            except Exception as exc:  # a busy database must not stop the solve
                log.warning("heartbeat for job %s failed: %s", job_id, exc)


def _solve(job_id: int) -> None:
    if not jobs.claim_job(job_id):
        log.info("job %s is not queued any more; nothing to do", job_id)
        return
    job = db.session.get(Job, job_id)
    assert job is not None
    image = job.user_image
    with logs.bind(job_id=job_id, submission_id=image.submission_id, image_id=image.id):
        log.info("job %s solving (attempt %s)", job_id, job.attempts)
        _solve_claimed(job)


def _solve_claimed(
    job: Job,
    *,
    solve: Callable[..., solver.SolveOutcome] = solver.solve,
    prepare: Callable[[UserImage, Path, float], PreparedInput] = intake.prepare_image,
    list_objects: bool = True,
) -> None:
    """Solve a claimed job and record its end. A batch passes stand-ins with the same
    signatures: ``solve`` for its chained solve, ``prepare`` for the input it already
    prepared; ``list_objects=False`` leaves the objects in the field to their first request
    (``batches.ensure_objects_in_field``)."""
    job_id = job.id
    store = storage()
    time_limit = settings().solve_time_limit
    # The job's time limit counts from here: reading the input is part of it.
    deadline = time.monotonic() + time_limit
    work_dir = store.make_work_dir(f"job-{job_id}-")
    end = _SolveEnd()
    clock = metrics.StageClock("preparing")  # the stage claim_job set is "starting"
    try:
        _solve_in(job, work_dir, time_limit, deadline, clock, end, solve, prepare, list_objects)
        _remove_engine_temporaries(work_dir)
        store.publish_job_dir(work_dir, job_id)
    except BaseException:
        store.discard(work_dir)
        db.session.rollback()
        jobs.finish_job(
            job_id,
            numbers=None,
            wcs_header=None,
            sources=end.sources,
            failure_reason="Internal error while solving; see the worker log.",
            stage_seconds=clock.totals(),
        )
        raise
    jobs.finish_job(
        job_id,
        numbers=end.numbers,
        wcs_header=end.wcs_text,
        failure_reason=end.reason,
        sources=end.sources,
        objects=end.objects,
        hints=end.hints,
        stage_seconds=clock.totals(),
        quality=end.quality,
    )


@dataclass
class _SolveEnd:
    """What a job's solve found, filled in as it goes: an internal error after the engine ran
    still records the sources it detected."""

    numbers: CalibrationNumbers | None = None
    wcs_text: str | None = None
    reason: str | None = None
    sources: int | None = None
    objects: list[str] = field(default_factory=list)
    hints: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None


def _solve_in(
    job: Job,
    work_dir: Path,
    time_limit: float,
    deadline: float,
    clock: metrics.StageClock,
    end: _SolveEnd,
    solve: Callable[..., solver.SolveOutcome],
    prepare: Callable[[UserImage, Path, float], PreparedInput],
    list_objects: bool,
) -> None:
    """Prepare the job's input and solve it in ``work_dir``, recording the result in ``end``."""
    job_id = job.id
    image = job.user_image
    params = SolveParams.from_row(image.submission)

    def on_stage(stage: str) -> None:
        clock.enter(stage)
        jobs.set_job_stage(job_id, stage)

    try:
        prepared = prepare(image, work_dir, deadline - time.monotonic())
    except UnsupportedInput as exc:
        end.reason = str(exc)
        return
    use_header = params.use_header_hints and settings().use_header_hints
    header, notes = header_files.read_prepared(prepared) if use_header else (None, [])
    attempts = hints.plan_attempts(params, header, prepared.width, prepared.height)
    outcome = solve(
        params,
        prepared,
        work_dir,
        index_dirs=settings().index_dirs,
        time_limit=time_limit,
        on_stage=on_stage,
        warm=_warm_engine(),
        deadline=deadline,
        header_attempts=attempts,
        ignore_file_wcs=use_header,
        fast_extraction=settings().fast_extraction,
        engine_processes=settings().engine_processes,
    )
    end.sources, end.reason = outcome.sources, outcome.reason
    clock.enter("products")  # the WCS read, objects in the field, files kept
    end.hints = hints.job_record(params, header, outcome.solved_by, outcome.header_tried, notes)
    if outcome.solved:
        header = read_wcs_header(work_dir / job_files.WCS_NAME)
        end.numbers = compute_calibration(
            header, image.width, image.height, y_axis_down=prepared.y_axis_down
        )
        end.wcs_text = header.tostring(sep="\n")
        end.quality = _quality(work_dir)
        if list_objects:
            end.objects = _objects_in_field(work_dir)


def _warm_engine() -> warm_engine.WarmEngine | None:
    """The worker's warm engine (opened before RQ forked this horse), when it is on."""
    config = settings()
    if not config.warm_engine:
        return None
    return warm_engine.loaded(config.index_dirs)


def _quality(work_dir: Path) -> dict[str, Any] | None:
    """The solution's quality is a bonus too: unreadable engine files never fail the solve."""
    try:
        return quality.read_quality(work_dir)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        log.warning("reading the solution's quality failed: %s", exc)
        return None


def _objects_in_field(work_dir: Path) -> list[str]:
    """Objects in the field are a bonus: a failure to list them never fails the solve."""
    try:
        return solver.objects_in_field(work_dir)
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        log.warning("listing the objects in the field failed: %s", exc)
        return []


KEEP = frozenset(
    {
        job_files.AXY_NAME,
        job_files.LOG_NAME,
        job_files.WCS_NAME,
        job_files.CORR_NAME,
        job_files.RDLS_NAME,
        job_files.MATCH_NAME,
        job_files.ANNOTATIONS_NAME,
    }
)


def _remove_engine_temporaries(work_dir: Path) -> None:
    """Keep the products (axy, wcs, corr, rdls, log); drop converted inputs and temp files."""
    for path in work_dir.iterdir():
        if path.name in KEEP:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
