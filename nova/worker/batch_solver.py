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
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy import func, select, update

from nova import logs
from nova.db.models import Calibration, Job, JobStatus, Submission, UserImage, utcnow
from nova.engine import commands, extraction, job_files, process, solver, warm_engine
from nova.engine.calibration import CalibrationNumbers
from nova.engine.hints import Attempt
from nova.engine.inputs import PreparedInput, UnsupportedInput
from nova.engine.params import SolveParams
from nova.extensions import db
from nova.infra import jobqueue
from nova.services import intake, jobs, storage
from nova.services.batches import Batch, BatchFrame
from nova.worker import tasks

log = logging.getLogger(__name__)

# The chained attempt searches the brightest this many sources only: with the right hints a
# frame solves within its first 10-20, and a frame the hints do not fit (clouds, another
# field) gives up in about half a second instead of searching for a minute.
CHAIN_DEPTH = 60
CHAIN_SCALE_ERROR = 5.0  # percent
GROUP_SIZE = jobqueue.BATCH_GROUP_SIZE
# The hint's radius: the field's own (centre to corner) with this margin, plus drift.
FIELD_MARGIN = 1.1
# Drift allowance: this many times the largest drift per frame seen so far, per frame since
# the frame the hint comes from (tracking drift is steady, not exact).
DRIFT_SAFETY = 2.0


def run_batch_task(batch_id: int) -> None:
    """RQ entry point: solve the batch's frames until none is left or the slice is used up."""
    with tasks.app_context():
        try:
            BatchTask(batch_id, current_app._get_current_object()).run()  # type: ignore[attr-defined]
        finally:
            db.session.remove()


@dataclass(frozen=True)
class Solved:
    """What the chain keeps of a solved frame."""

    position: int
    ra: float
    dec: float
    radius: float
    pixscale: float
    parity: float


def separation(a: Solved, b: Solved) -> float:
    """Angle between two frames' centres, in degrees."""
    ra1, dec1, ra2, dec2 = (math.radians(v) for v in (a.ra, a.dec, b.ra, b.dec))
    cos = math.sin(dec1) * math.sin(dec2) + math.cos(dec1) * math.cos(dec2) * math.cos(ra1 - ra2)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


class Chain:
    """The frame the next hints come from, and the drift seen so far.

    A frame that solves far from the chain (another field, by the fallback) does not move it,
    unless the next such frame agrees with it: then the sequence has moved there.
    """

    def __init__(self) -> None:
        self.reference: Solved | None = None
        self.stray: Solved | None = None
        self.drift_per_frame = 0.0  # degrees

    def record(self, frame: Solved) -> None:
        ref = self.reference
        if ref is None:
            self.reference = frame
        elif separation(ref, frame) <= ref.radius:
            gap = abs(frame.position - ref.position) or 1
            self.drift_per_frame = max(self.drift_per_frame, separation(ref, frame) / gap)
            self.reference = frame
            self.stray = None
        elif self.stray is not None and separation(self.stray, frame) <= self.stray.radius:
            self.reference, self.stray, self.drift_per_frame = frame, None, 0.0
        else:
            self.stray = frame

    def hints(self, params: SolveParams, position: int) -> SolveParams | None:
        """``params`` with the chain's scale, parity and position hint for this frame."""
        ref = self.reference
        if ref is None:
            return None
        gap = abs(position - ref.position) or 1
        radius = ref.radius * FIELD_MARGIN + DRIFT_SAFETY * self.drift_per_frame * gap
        return replace(
            params,
            scale_units="arcsecperpix",
            scale_type="ev",
            scale_est=ref.pixscale,
            scale_err=CHAIN_SCALE_ERROR,
            scale_lower=None,
            scale_upper=None,
            center_ra=ref.ra,
            center_dec=ref.dec,
            radius=min(180.0, radius),
            # The engine's "positive" parity is a negative CD determinant (nova's -1).
            parity=0 if ref.parity < 0 else 1,
        )


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
            while not self.stopped.wait(self.app.config["HEARTBEAT_SECONDS"]):
                for job_id in list(self.job_ids):
                    try:
                        jobs.heartbeat(job_id)
                    except Exception as exc:  # a busy database must not stop the solve
                        log.warning("heartbeat for job %s failed: %s", job_id, exc)


@dataclass
class GroupFrame:
    """A frame of a chained group: its scratch directory holds its job.axy and, after the
    engine ran, what the engine wrote."""

    position: int
    job_id: int
    scratch: Path
    prepared: PreparedInput | None  # the input, prepared in ``scratch``
    ready: bool  # job.axy written: the engine tries it


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

    def pending(self, limit: int) -> list[tuple[int, int, int | None]]:
        """The first frames still to do, in part order: (position, submission, queued job,
        or None when the submission is still to be recognised)."""
        rows = db.session.execute(
            select(BatchFrame.position, Submission.id, Job.id)
            .join(Submission, BatchFrame.submission_id == Submission.id)
            .outerjoin(UserImage, UserImage.submission_id == Submission.id)
            .outerjoin(Job, Job.user_image_id == UserImage.id)
            .where(
                BatchFrame.batch_id == self.batch_id,
                Submission.processing_started.is_(None) | (Job.status == JobStatus.QUEUED),
            )
            .order_by(BatchFrame.position, Job.id)
            .limit(limit)
        ).all()
        db.session.commit()  # end the read: other tasks' changes must be seen next time
        return [(int(p), int(s), None if j is None else int(j)) for p, s, j in rows]

    def take_frames(self) -> list[tuple[int, int]] | None:
        """Claim the next frames (recognising them first when needed): a group of
        GROUP_SIZE once the chain has a frame to start from, else one. None: nothing left."""
        rows = self.pending(GROUP_SIZE)
        if not rows:
            return None
        if self.chained and self.chain.reference is None:
            self.seed_chain(rows[0][0])
        if not self.chained or self.chain.reference is None:
            rows = rows[:1]  # solve one alone: its solution starts the chain
        claimed = []
        for position, submission_id, job_id in rows:
            if job_id is None:
                if not self.claim_submission(submission_id):
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

    def claim_submission(self, submission_id: int) -> bool:
        """Take a frame's recognition; False when another task took it first."""
        result = db.session.execute(
            update(Submission)
            .where(Submission.id == submission_id, Submission.processing_started.is_(None))
            .values(processing_started=utcnow())
        )
        db.session.commit()
        return result.rowcount == 1

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
        config = self.app.config
        started = time.monotonic()
        deadline = started + config["SOLVE_TIME_LIMIT"]
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
                        hints, prepared, scratch, deadline, self.template, config["FAST_EXTRACTION"]
                    )
                except (UnsupportedInput, process.SolveTimeout):
                    ready = False
                frames.append(GroupFrame(position, job_id, scratch, prepared, ready))
            run_engine(
                [frame.scratch for frame in frames if frame.ready],
                config["INDEX_DIRS"],
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
        row = db.session.execute(
            select(BatchFrame.position, Calibration)
            .join(UserImage, UserImage.submission_id == BatchFrame.submission_id)
            .join(Job, Job.user_image_id == UserImage.id)
            .join(Calibration, Calibration.job_id == Job.id)
            .where(BatchFrame.batch_id == self.batch_id)
            .order_by(func.abs(BatchFrame.position - position), BatchFrame.position)
            .limit(1)
        ).first()
        db.session.commit()
        if row is not None:
            self.chain.record(solved_frame(int(row[0]), row[1]))


def solved_frame(position: int, calibration: Calibration | CalibrationNumbers) -> Solved:
    return Solved(
        position,
        calibration.ra,
        calibration.dec,
        calibration.radius,
        calibration.pixscale,
        calibration.parity,
    )


def chained_solve(
    scratch: GroupFrame | None, shared_seconds: float = 0.0
) -> Callable[..., solver.SolveOutcome]:
    """A stand-in for ``solver.solve``: take over what the group's engine run found for this
    frame (its scratch directory); when it found nothing, ``solver.solve`` with the frame's
    own parameters in what is left of its time limit."""

    def solve(
        params: SolveParams,
        prepared: PreparedInput,
        work_dir: Path,
        *,
        index_dirs: Sequence[Path],
        time_limit: float,
        on_stage: Callable[[str], None] = lambda stage: None,
        warm: warm_engine.WarmEngine | None = None,
        deadline: float | None = None,
        header_attempts: Sequence[Attempt] = (),
        ignore_file_wcs: bool = False,
        fast_extraction: bool = True,
        engine_processes: int | None = None,
    ) -> solver.SolveOutcome:
        # The frame's own limit, less what it spent in its group's common run: every frame of
        # a group gets its full time limit, however many of them need the ordinary solve.
        own_deadline = time.monotonic() + time_limit - shared_seconds
        deadline = own_deadline if deadline is None else min(deadline, own_deadline)
        if scratch is not None:
            for name in (
                job_files.AXY_NAME,
                job_files.WCS_NAME,
                job_files.CORR_NAME,
                job_files.RDLS_NAME,
            ):
                if (scratch.scratch / name).exists():
                    os.replace(scratch.scratch / name, work_dir / name)
            with (work_dir / job_files.LOG_NAME).open("a") as log_file:
                log_file.write((scratch.scratch / job_files.LOG_NAME).read_text(errors="replace"))
            if (work_dir / job_files.WCS_NAME).exists():
                return solver.SolveOutcome(True, None, table_rows(work_dir / job_files.AXY_NAME))
            with (work_dir / job_files.LOG_NAME).open("a") as log_file:
                log_file.write("\nno solution with the chain's hints; solving as an ordinary job\n")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return solver.SolveOutcome(
                False, f"Stopped after the time limit of {time_limit:g} s without a solution.", None
            )
        outcome = solver.solve(
            params,
            prepared,
            work_dir,
            index_dirs=index_dirs,
            time_limit=remaining,
            on_stage=on_stage,
            warm=warm,
            deadline=deadline,
            header_attempts=header_attempts,
            ignore_file_wcs=ignore_file_wcs,
            fast_extraction=fast_extraction,
            engine_processes=engine_processes,
        )
        if outcome.reason and outcome.reason.startswith("Stopped after the time limit"):
            # The limit is the frame's, not what the chained attempt left of it.
            outcome = replace(
                outcome,
                reason=f"Stopped after the time limit of {time_limit:g} s without a solution.",
            )
        return outcome

    return solve


# Output file cards of job.axy: solve-field writes them relative to the job's directory (the
# engine's working directory); a group run starts in their common parent instead.
OUTPUT_CARDS = ("ANWCS", "ANCORR", "ANRDLS", "ANMATCH", "ANSOLVED", "ANNEWFITS")
ENGINE_AXY_NAME = "chain.axy"
FITS_CARD = 80


def write_chained_axy(
    hints: SolveParams,
    prepared: PreparedInput,
    scratch: Path,
    deadline: float,
    template: AxyTemplate,
    fast: bool = True,
) -> bool:
    """job.axy with the chain's hints (as solve-field --just-augment writes it), and the
    engine's copy of it whose outputs point into ``scratch`` from its parent directory.
    False when no usable job.axy came out (the ordinary solve then tries and says why)."""
    log_path = scratch / job_files.LOG_NAME
    with log_path.open("a") as log_file:
        log_file.write(
            f"chained from the solved frame at RA {hints.center_ra:.5f}, Dec "
            f"{hints.center_dec:.5f}: scale {hints.scale_est:.4f} arcsec/px "
            f"+-{hints.scale_err:g}%, radius {hints.radius:.3f} deg, parity "
            f"{'positive' if hints.parity == 0 else 'negative'}, brightest {CHAIN_DEPTH} sources\n"
        )
    code = extract_with_template(hints, prepared, scratch, log_path, deadline, template, fast)
    axy = scratch / job_files.AXY_NAME
    if code != 0 or not axy.exists() or table_rows(axy) < solver.MIN_SOURCES_TO_SOLVE:
        return False
    data = bytearray(axy.read_bytes())
    for offset in range(0, len(data) - FITS_CARD + 1, FITS_CARD):
        keyword = data[offset : offset + 8].rstrip().decode("ascii")
        if keyword == "END":
            break
        if keyword not in OUTPUT_CARDS:
            continue
        # A string card: KEYWORD = 'value' / comment (solve-field's names hold no quotes).
        text = data[offset : offset + FITS_CARD].decode("ascii")
        name = text[10:].split("'")[1].strip()
        card = f"{keyword:<8}= '{scratch.name}/{name}'".ljust(FITS_CARD)
        if len(card) != FITS_CARD:
            return False  # a name too long for one card: leave it to the ordinary solve
        data[offset : offset + FITS_CARD] = card.encode("ascii")
    (scratch / ENGINE_AXY_NAME).write_bytes(bytes(data))
    return True


def run_engine(scratches: Sequence[Path], index_dirs: Sequence[Path], deadline: float) -> None:
    """One astrometry-engine for all the group's frames, searching the brightest CHAIN_DEPTH
    sources of each; every frame's log gets the run's output."""
    if not scratches:
        return
    parent = scratches[0].parent
    config = scratches[0] / "chain.cfg"
    cpulimit = int(max(1.0, deadline - time.monotonic())) + 1
    depths = " ".join(str(depth) for depth in range(10, CHAIN_DEPTH + 1, 10))
    config.write_text(commands.engine_config(index_dirs, cpulimit) + f"depths {depths}\n")
    run_log = scratches[0] / "chain.log"
    try:
        process.run_with_deadline(
            ["astrometry-engine", "-c", str(config)]
            + [f"{scratch.name}/{ENGINE_AXY_NAME}" for scratch in scratches],
            parent,
            run_log,
            deadline,
        )
    except process.SolveTimeout:
        pass  # what is solved is kept; the rest is left to the ordinary solve (out of time)
    output = run_log.read_text(errors="replace")
    note = f"(one engine run for {len(scratches)} frames of the batch)\n"
    for scratch in scratches:
        with (scratch / job_files.LOG_NAME).open("a") as log_file:
            log_file.write(note + output)


class AxyTemplate:
    """What ``solve-field --just-augment`` wrote for one set of options, so that the next
    frame with the same options gets its job.axy without starting it again.

    solve-field writes the options as the primary header and copies the source table with a
    header of its own; only the row count and the rows differ from frame to frame (the
    tests compare the result with solve-field's byte for byte). A table laid out otherwise
    than the one it learnt from, or other options, go to solve-field as usual.
    """

    def __init__(self) -> None:
        self.key: tuple[str, ...] | None = None
        self.source_layout = b""
        self.primary = b""
        self.table_header = b""

    @staticmethod
    def key_of(cmd: Sequence[str]) -> tuple[str, ...]:
        """The options of an augment command, without the directory and the input."""
        key = list(cmd[:-1])
        for flag in ("--dir", "--temp-dir"):
            if flag in key:
                key[key.index(flag) + 1] = ""
        return tuple(key)

    def write(self, cmd: Sequence[str], target: Path) -> bool:
        """Write ``target`` for this augment command from the template; False if it cannot."""
        if self.key != self.key_of(cmd):
            return False
        hdus = split_fits(Path(cmd[-1]).read_bytes())
        if hdus is None or hdus.layout != self.source_layout:
            return False
        header = replace_card(
            self.table_header, "NAXIS2", f"{hdus.rows:>20} / number of rows in table"
        )
        if header is None:
            return False
        padding = b"\0" * (-len(hdus.data) % extraction.FITS_BLOCK)
        target.write_bytes(self.primary + header + hdus.data + padding)
        return True

    def learn(self, cmd: Sequence[str], written: Path) -> None:
        source = split_fits(Path(cmd[-1]).read_bytes())
        result = split_fits(written.read_bytes())
        if source is None or result is None:
            return
        self.key = self.key_of(cmd)
        self.source_layout = source.layout
        self.primary, self.table_header = result.primary, result.table_header


@dataclass(frozen=True)
class FitsTable:
    primary: bytes  # the primary header block(s)
    table_header: bytes  # extension 1's header block(s)
    layout: bytes  # extension 1's header cards but NAXIS2, to compare layouts
    rows: int
    data: bytes  # extension 1's rows, without padding


def _header_end(raw: bytes, start: int) -> int | None:
    """Offset after the header block(s) starting at ``start`` (END card, then padding)."""
    for offset in range(start, len(raw) - FITS_CARD + 1, FITS_CARD):
        if raw[offset : offset + 8] == b"END     ":
            end = offset + FITS_CARD
            return end + (-(end - start) % extraction.FITS_BLOCK)
    return None


def split_fits(raw: bytes) -> FitsTable | None:
    """A primary HDU with no data and a binary table, split into their parts."""
    primary_end = _header_end(raw, 0)
    if primary_end is None or b"NAXIS   =                    0" not in raw[:primary_end]:
        return None
    table_end = _header_end(raw, primary_end)
    if table_end is None:
        return None
    header = raw[primary_end:table_end]
    cards = {
        header[o : o + 8].rstrip().decode("ascii", "replace"): header[o + 10 : o + 30]
        for o in range(0, len(header), FITS_CARD)
    }
    try:
        row_bytes, rows = int(cards["NAXIS1"]), int(cards["NAXIS2"])
        if int(cards.get("PCOUNT", b"0")) != 0:
            return None
    except (KeyError, ValueError):
        return None
    layout = b"".join(
        header[o : o + FITS_CARD]
        for o in range(0, len(header), FITS_CARD)
        if header[o : o + 8] not in (b"NAXIS2  ", b" " * 8)
    )
    data = raw[table_end : table_end + row_bytes * rows]
    if len(data) != row_bytes * rows:
        return None
    return FitsTable(raw[:primary_end], header, layout, rows, data)


def table_rows(axy: Path) -> int:
    """Sources in a job.axy (solver.count_sources without astropy's cost per file)."""
    table = split_fits(axy.read_bytes())
    return table.rows if table is not None else solver.count_sources(axy)


def replace_card(header: bytes, keyword: str, value: str) -> bytes | None:
    card = f"{keyword:<8}= {value}".ljust(FITS_CARD).encode("ascii")
    if len(card) != FITS_CARD:
        return None
    key = f"{keyword:<8}".encode("ascii")
    for offset in range(0, len(header), FITS_CARD):
        if header[offset : offset + 8] == key:
            return header[:offset] + card + header[offset + FITS_CARD :]
    return None


def extract_with_template(
    params: SolveParams,
    prepared: PreparedInput,
    work_dir: Path,
    log_path: Path,
    deadline: float,
    template: AxyTemplate,
    fast: bool = True,
) -> int:
    """``solver.extract_sources``, with the in-process extraction's final solve-field
    --just-augment replaced by the template whenever the options are the same."""
    if not fast:
        return solver.extract_sources(params, prepared, work_dir, log_path, deadline, fast=False)

    def run(cmd: list[str]) -> int:
        augment = cmd[:2] == ["solve-field", "--just-augment"]
        target = work_dir / job_files.AXY_NAME
        if augment and template.write(cmd, target):
            with log_path.open("a") as log_file:
                log_file.write(
                    f"{job_files.AXY_NAME} written as the group's first (same options)\n"
                )
            return 0
        code = process.run_with_deadline(cmd, work_dir, log_path, deadline)
        if augment and code == 0 and target.exists():
            template.learn(cmd, target)
        return code

    try:
        done = extraction.extract(
            params,
            prepared,
            work_dir,
            run=run,
            augment_options=commands.augment_options(params, work_dir),
            max_sources=commands.MAX_SOURCES,
        )
    except process.SolveTimeout:
        raise
    except Exception:  # anything the fast path cannot do: exactly as an ordinary job
        (work_dir / job_files.AXY_NAME).unlink(missing_ok=True)
        return solver.extract_sources(params, prepared, work_dir, log_path, deadline, fast=True)
    with log_path.open("a") as log_file:
        log_file.write(done.describe() + "\n")
    return 0
