"""The worker side of a batch: a task takes the batch's frames in order and solves each with
the hints of the frames already solved.

Frames of a time series show one field, shifted by tracking drift and slowly turning. Once a
frame is solved, the next need almost no search: they are tried first with its scale
(within 5 %), parity and centre, within a radius covering the field plus the drift seen so
far, searching only their brightest sources (``CHAIN_DEPTH``), GROUP_SIZE frames in one
``astrometry-engine`` run; a frame that does not solve so is then solved exactly as an
ordinary job (the batch's own hints, or blind) within its own time limit (less its share of
the group's run). Per-frame overhead is what a time series would otherwise pay for: here
there is no queue hop per frame, no second task to recognise the upload, no engine start
and no solve-field start per frame, and the objects in the field are listed on first
request instead.

Several tasks may work on one batch side by side (one per worker): every step is claimed
with a conditional update, so no frame is recognised or solved twice.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import select

from nova import logs
from nova.db.batch_models import Batch
from nova.db.models import Calibration, Job
from nova.engine import process
from nova.engine.input_formats import PreparedInput, UnsupportedInput
from nova.engine.params import SolveParams
from nova.extensions import db, settings
from nova.infra import jobqueue
from nova.services import batch_frames, intake, jobs, storage
from nova.worker import context, tasks
from nova.worker.chain import Chain, solved_frame
from nova.worker.group_run import (
    AxyTemplate,
    GroupFrame,
    chained_solve,
    run_engine,
    write_chained_axy,
)

log = logging.getLogger(__name__)

GROUP_SIZE = jobqueue.BATCH_GROUP_SIZE


def run_batch_task(batch_id: int) -> None:
    """RQ entry point: solve the batch's frames until none is left or the slice is used up."""
    with context.app_context():
        try:
            BatchTask(batch_id, current_app._get_current_object()).run()  # type: ignore[attr-defined]
        finally:
            db.session.remove()


class _Heartbeat(threading.Thread):
    """Beats for the frames the task is solving (the reconciler retries a solving job whose
    beats stop)."""

    def __init__(self, app: Flask) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.job_ids: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        with self.app.app_context():
            while not self.stopped.wait(settings(self.app).heartbeat_seconds):
                for job_id in list(self.job_ids):
                    try:
                        jobs.heartbeat(job_id)
                    except Exception as exc:  # a busy database must not stop the solve
                        log.warning("heartbeat for job %s failed: %s", job_id, exc)


class BatchTask:
    def __init__(self, batch_id: int, app: Flask) -> None:
        self.batch_id = batch_id
        self.app = app
        self.chain = Chain()
        self.template = AxyTemplate()
        # Frames this task recognised, their input kept prepared (job -> its scratch
        # directory and input): solving them does not read the file again.
        self.recognised: dict[int, tuple[Path, PreparedInput]] = {}

    def run(self) -> None:
        batch = db.session.get(Batch, self.batch_id)
        if batch is None:
            return
        self.chained = batch.chain
        started = time.monotonic()
        beat = _Heartbeat(self.app)
        beat.start()
        try:
            while True:
                if time.monotonic() - started > jobqueue.BATCH_SLICE_SECONDS:
                    # Let other uploads in; the continuation goes to the back of the queue.
                    jobqueue.enqueue_batch(self.batch_id, 0)
                    return
                claimed = self.take_frames()
                if claimed is None:
                    return
                beat.job_ids = [job_id for _, job_id in claimed]
                if self.chained and self.chain.reference is not None and claimed:
                    self.solve_group(claimed)
                else:
                    for position, job_id in claimed:
                        self.solve_one(position, job_id)
                beat.job_ids = []
        finally:
            beat.stopped.set()
            for scratch, _ in self.recognised.values():
                storage().discard(scratch)
            self.recognised.clear()

    def take_frames(self) -> list[tuple[int, int]] | None:
        """Claim the next frames (recognising them first when needed): a group of
        GROUP_SIZE once the chain has a frame to start from, else one. None: nothing left."""
        rows = batch_frames.pending_frames(self.batch_id, GROUP_SIZE)
        if not rows:
            return None
        if self.chained and self.chain.reference is None:
            self.seed_chain(rows[0][0])
        if not self.chained or self.chain.reference is None:
            rows = rows[:1]  # solve one alone: its solution starts the chain
        claimed = []
        for position, submission_id, job_id in rows:
            if job_id is None:
                if not batch_frames.claim_submission(submission_id):
                    continue
                job_ids = self.recognise(submission_id)
            else:
                job_ids = [job_id]
            claimed += [(position, one) for one in job_ids if jobs.claim_job(one)]
        return claimed

    def recognise(self, submission_id: int) -> list[int]:
        """Recognise a frame's upload, keeping its prepared input for its solve."""
        store = storage()
        scratch = store.make_work_dir(f"chain-{submission_id}-")
        recognised = intake.recognise_submission(submission_id, prepare_into=scratch)
        if recognised.prepared is not None and len(recognised.job_ids) == 1:
            self.recognised[recognised.job_ids[0]] = (scratch, recognised.prepared)
        else:
            store.discard(scratch)
        return recognised.job_ids

    def take_prepared(self, job_id: int) -> tuple[Path, PreparedInput] | None:
        return self.recognised.pop(job_id, None)

    def solve_one(
        self,
        position: int,
        job_id: int,
        scratch: GroupFrame | None = None,
        shared_seconds: float = 0.0,
    ) -> None:
        """Solve and record one claimed frame, as an ordinary job does (tasks._solve_claimed),
        taking over what its group's engine run already found."""
        job = db.session.get(Job, job_id)
        assert job is not None
        image = job.user_image
        kept = None if scratch is not None else self.take_prepared(job_id)
        with logs.bind(job_id=job_id, submission_id=image.submission_id, image_id=image.id):
            log.info("batch %s frame %s: job %s solving", self.batch_id, position + 1, job_id)
            prepared = (
                scratch.prepared if scratch is not None else None if kept is None else kept[1]
            )
            try:
                tasks._solve_claimed(
                    job,
                    solve=chained_solve(scratch, shared_seconds),
                    # Prepared already (by the group or the recognition), in a scratch
                    # directory kept until the solve has ended.
                    prepare=intake.prepare_image if prepared is None else lambda *_: prepared,
                    list_objects=False,
                )
            finally:
                if kept is not None:
                    storage().discard(kept[0])
        db.session.expire_all()
        calibration = db.session.scalar(select(Calibration).where(Calibration.job_id == job_id))
        if calibration is not None:
            self.chain.record(solved_frame(position, calibration))

    def solve_group(self, claimed: list[tuple[int, int]]) -> None:
        """Chained frames: every job.axy with the chain's hints, one engine run for all, then
        each frame recorded (or solved again as an ordinary job when the hints failed)."""
        config = settings(self.app)
        started = time.monotonic()
        deadline = started + config.solve_time_limit
        store = storage()
        frames: list[GroupFrame] = []
        # One set of hints for the whole group (the radius for its frame farthest from the
        # chain's): every job.axy after the first is then written from the first one's.
        assert self.chain.reference is not None
        farthest = max(
            (p for p, _ in claimed), key=lambda p: abs(p - self.chain.reference.position)
        )
        try:
            for position, job_id in claimed:
                job = db.session.get(Job, job_id)
                assert job is not None
                image = job.user_image
                hints = self.chain.hints(SolveParams.from_row(image.submission), farthest)
                assert hints is not None
                kept = self.take_prepared(job_id)
                scratch, prepared = kept or (store.make_work_dir(f"chain-{job_id}-"), None)
                try:
                    if prepared is None:
                        prepared = intake.prepare_image(image, scratch, deadline - time.monotonic())
                    ready = write_chained_axy(
                        hints, prepared, scratch, deadline, self.template, config.fast_extraction
                    )
                except (UnsupportedInput, process.SolveTimeout):
                    ready = False
                frames.append(GroupFrame(position, job_id, scratch, prepared, ready))
            run_engine(
                [frame.scratch for frame in frames if frame.ready],
                config.index_dirs,
                deadline,
            )
            # Each frame's share of the common phase counts against its own time limit.
            shared = (time.monotonic() - started) / len(frames)
            for frame in frames:
                self.solve_one(frame.position, frame.job_id, frame, shared)
        finally:
            for frame in frames:
                store.discard(frame.scratch)

    def seed_chain(self, position: int) -> None:
        """Start from the solved frame of the batch nearest to ``position`` (another task's)."""
        nearest = batch_frames.nearest_solved_frame(self.batch_id, position)
        if nearest is not None:
            self.chain.record(solved_frame(*nearest))
