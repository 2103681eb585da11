"""Wrap the astrometry.net engine: source extraction, then solving, under a hard deadline.

Stage 1 writes ``job.axy`` (image conversion, source extraction with nova's defaults:
downsample 2, at most 1000 sources, uniformized) as ``solve-field --just-augment`` does:
in the worker's process with ``extraction`` (the same file without solve-field's Python
helpers; ``fast_extraction``), or by running ``solve-field --just-augment`` when that is off
or cannot take the job.
Stage 2 solves it, writing ``wcs.fits``, ``corr.fits`` and ``rdls.fits``: with the warm
engine (``warm_engine``, the solver as a library with the index files opened once in the
worker) when it is given one and it can honour the job's options, else -- and whenever the
library fails -- by running ``astrometry-engine``. Subprocesses run in their own process
group; when the wall-clock budget runs out the whole group is killed, because the engine's
own cpulimit is not reliable (the warm engine's fork is killed likewise).

Header hints (``hints.Attempt``) are first attempts of stage 2: the extracted sources are
given the attempt's scale, position and WCS to verify (``solve-field --just-augment`` on
``job.axy`` itself, C only), solved on a short budget, and when that does not solve, the
job's own ``job.axy`` is solved as before within what is left of the time limit.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from astropy.io import fits
from flask import current_app, has_app_context

from nova.engine import extraction, fieldobjects, warm_engine
from nova.engine.hints import Attempt
from nova.engine.inputs import PreparedInput
from nova.engine.params import SolveParams
from nova.infra import cancellation

MAX_SOURCES = 1000  # nova's --objs
AXY_NAME = "job.axy"
LOG_NAME = "log"
WCS_NAME = "wcs.fits"
CORR_NAME = "corr.fits"
RDLS_NAME = "rdls.fits"
# The engine's best match (log-odds, stars matched, index): the solution's quality.
MATCH_NAME = "match.fits"
ANNOTATIONS_NAME = "annotations.json"
KILL_GRACE_SECONDS = 2.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Resolved once here: the forked child must do as little as possible before exec.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
# util-linux's setpriv sets the same death signal and then execs the command. A preexec_fn
# makes Python fork the whole worker and run Python in the child, about 10 ms per command
# (stage 1 runs four); without one, subprocess spawns with vfork in about 1 ms.
SETPRIV = shutil.which("setpriv")
# Fewer sources than this after downsampling: extract again at full resolution, hinted or
# not. A hint does not rescue so few: apod5's 46 sources at downsample 2 fail with a scale
# hint (bare solve-field too, about 1.2 s of search) and with scale and position hints.
MIN_SOURCES_AFTER_DOWNSAMPLE = 50
# The engine matches quadrangles of stars and verifies them against more stars.
MIN_SOURCES_TO_SOLVE = 5
# A header hint is a first attempt, never a constraint: each gets at most this share of
# the time limit (and at most HEADER_ATTEMPT_MAX_SECONDS); a hinted solve takes 0.1-0.6 s.
HEADER_ATTEMPT_SHARE = 0.1
HEADER_ATTEMPT_MAX_SECONDS = 15.0
# ... and looks at the brightest HEADER_ATTEMPT_DEPTH sources only: a right hint solves
# with them (the samples need at most 30), a wrong one fails in a fraction of a second
# instead of searching every quad near a wrong position (minutes on a 1.5-degree field).
HEADER_ATTEMPT_DEPTH = 30
JOB_AXY_BASE_NAME = "job-unhinted.axy"
# Blind and wide-hinted solves race scale bands in parallel engines (race_bands): only a
# range at least RACE_MIN_RATIO wide (high / low) is split -- a +-20 % hint (1.5x) solves in
# 0.1-0.3 s and a second engine would only add CPU; the first split is at the measured
# RACE_SPLIT_DEGREES of field width; neighbouring bands overlap by RACE_BAND_OVERLAP.
RACE_MIN_RATIO = 4.0
RACE_SPLIT_DEGREES = (10.0,)
RACE_BAND_OVERLAP = 1.1
BAND_DIR_PREFIX = "band-"
VERIFY_WCS_NAME = "header-wcs.fits"
# solve-field's option to leave a FITS image's own WCS alone: with header hints on, Nova
# checks that WCS itself and asks the engine to verify it only when it is sound.
NO_VERIFY = "--no-verify"


class SolveTimeout(Exception):
    pass


@dataclass(frozen=True)
class SolveOutcome:
    solved: bool
    reason: str | None  # why it failed; None when solved
    sources: int | None  # sources handed to the engine
    solved_by: Attempt | None = None  # the header attempt that solved; None: the job's own
    header_tried: tuple[Attempt, ...] = ()  # header attempts that ran and did not solve


def engine_config(index_dirs: Sequence[Path], cpulimit: int) -> str:
    """The engine's configuration: every index file found in the configured directories."""
    lines = [f"add_path {directory}" for directory in index_dirs]
    # The cpulimit is only a second line of defence; the wall clock below is what holds.
    lines += ["autoindex", f"cpulimit {cpulimit}"]
    return "\n".join(lines) + "\n"


def augment_command(params: SolveParams, prepared: PreparedInput, work_dir: Path) -> list[str]:
    """The ``solve-field --just-augment`` command for these parameters (nova's mapping)."""
    cmd = ["solve-field", "--just-augment", *augment_options(params, work_dir)]
    if prepared.is_star_list:
        cmd += ["--width", str(prepared.width), "--height", str(prepared.height)]
    else:
        if params.downsample_factor > 1:
            cmd += ["--downsample", str(params.downsample_factor)]
        if params.invert:
            cmd.append("--invert")
        if params.use_sextractor:
            cmd.append("--use-source-extractor")
        if prepared.kind == "fits":
            cmd += ["--fits-image", "--extension", str(prepared.fits_extension)]
    cmd.append(str(prepared.path))
    return cmd


def augment_options(params: SolveParams, work_dir: Path) -> list[str]:
    """solve-field's options for the header of ``job.axy``: output names, ``--objs``, the
    hints and the engine's settings; everything but the input and how to extract it."""
    cmd = [
        "--no-plots",
        "--overwrite",
        "--dir",
        str(work_dir),
        "--temp-dir",
        str(work_dir),
        "--axy",
        AXY_NAME,
        "--wcs",
        WCS_NAME,
        "--corr",
        CORR_NAME,
        "--rdls",
        RDLS_NAME,
        "--match",
        MATCH_NAME,
        "--solved",
        "none",
        "--new-fits",
        "none",
        "--index-xyls",
        "none",
        "--objs",
        str(MAX_SOURCES),
        "--tag-all",
    ]
    bounds = params.scale_bounds()
    if bounds is not None:
        cmd += [
            "--scale-units",
            params.scale_units,
            "--scale-low",
            repr(bounds[0]),
            "--scale-high",
            repr(bounds[1]),
        ]
    if params.has_position_hint:
        # Tested with "is not None", unlike nova: RA 0 / Dec 0 are real positions.
        cmd += [
            "--ra",
            repr(params.center_ra),
            "--dec",
            repr(params.center_dec),
            "--radius",
            repr(params.radius),
        ]
    if params.parity in (0, 1):
        cmd += ["--parity", "pos" if params.parity == 0 else "neg"]
    if params.tweak_order == 0:
        cmd.append("--no-tweak")
    else:
        cmd += ["--tweak-order", str(params.tweak_order)]
    if params.positional_error is not None:
        cmd += ["--pixel-error", repr(params.positional_error)]
    if params.crpix_center:
        cmd.append("--crpix-center")
    return cmd


def run_with_deadline(cmd: list[str], cwd: Path, log_path: Path, deadline: float) -> int:
    """Run ``cmd`` appending to ``log_path``; kill its whole process group at ``deadline``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise SolveTimeout()
    cancellation.check()
    with log_path.open("ab") as log:
        process = spawn(cmd, cwd, log)
        # Its own session, so its pid is its group: a cancel kills the group at once.
        cancellation.track_group(process.pid)
        try:
            code = process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            kill_process_group(process)
            raise SolveTimeout() from None
        except BaseException:
            # The worker itself is being stopped (RQ timeout, SIGTERM): take the engine along.
            kill_process_group(process)
            raise
        finally:
            cancellation.forget(process.pid)
    cancellation.check()  # killed by a cancel: no failure to work around
    return code


def spawn(cmd: list[str], cwd: Path, log: BinaryIO) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, output to ``log`` (the command line first),
    with SIGKILL as its death signal should the worker die."""
    log.write(("$ " + " ".join(cmd) + "\n").encode())
    log.flush()
    if SETPRIV and shutil.which(cmd[0]):
        argv, preexec = [SETPRIV, "--pdeathsig", "KILL", "--", *cmd], None
    else:  # a missing program still raises FileNotFoundError here, as it always did
        argv, preexec = cmd, _die_with_parent
    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=preexec,
    )


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL if the worker dies (kill -9 leaves no one to
    stop the engine otherwise; it runs in its own session so it would live on)."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after a short grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # The leader is gone; children it spawned may still hold the group.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        break


def objects_in_field(work_dir: Path) -> list[str]:
    """Name what is in a solved field, as nova does, and keep the annotations for later.

    Constellations (with at least two of their stars in the field), the ten brightest named
    stars and NGC/IC objects (with their aliases, Messier numbers included), each listed
    line split into names on "/" outside parentheses (``fieldobjects``). The same objects
    with pixel positions (FITS 1-based) and sizes go to ``annotations.json``: every named
    star in the field, with its catalogue V magnitude.
    """
    found = fieldobjects.field_objects(work_dir, WCS_NAME)
    (work_dir / ANNOTATIONS_NAME).write_text(json.dumps(found.annotations))
    names: list[str] = []
    for line in found.listed:
        for name in fieldobjects.split_names(line):
            if name not in names:
                names.append(name)
    return names


def count_sources(axy_path: Path) -> int:
    with fits.open(axy_path) as hdus:
        return int(hdus[1].header.get("NAXIS2", 0)) if len(hdus) > 1 else 0


def _extracted_sources(work_dir: Path, earlier: int | None) -> int | None:
    """Sources of the attempt the time limit stopped: its ``job.axy`` when extraction had
    finished writing it, else what an earlier attempt counted."""
    try:
        return count_sources(work_dir / AXY_NAME)
    except (OSError, ValueError, IndexError):  # not written yet, or cut off mid-write
        return earlier


def solve(
    params: SolveParams,
    prepared: PreparedInput,
    work_dir: Path,
    *,
    index_dirs: Sequence[Path],
    time_limit: float,
    on_stage: Callable[[str], None] = lambda stage: None,
    warm: warm_engine.WarmEngine | None = None,
    fast_extraction: bool | None = None,
    deadline: float | None = None,
    header_attempts: Sequence[Attempt] = (),
    ignore_file_wcs: bool = False,
    engine_processes: int | None = None,
) -> SolveOutcome:
    """Extract sources and solve in ``work_dir``; never runs longer than ``time_limit``.

    ``deadline`` (a time.monotonic() value) ends it sooner: the job's limit counts from its
    start, and reading the input has used part of it already.
    ``header_attempts`` are solved first, each on a short budget, before ``params``;
    ``ignore_file_wcs`` keeps a FITS image's own WCS from the engine (header hints decide
    whether it is verified).

    ``warm`` solves stage 2 in-process when given (``astrometry-engine`` otherwise).
    ``fast_extraction`` runs stage 1 with ``extraction`` (None: the app's FAST_EXTRACTION
    setting, on outside an app).

    Downsampling (nova's default 2) makes extraction and blind solves much faster, but on
    small or soft images it can smear the stars away. When it leaves fewer than
    MIN_SOURCES_AFTER_DOWNSAMPLE sources, or the engine finds no solution, the image is
    extracted again at full resolution and solved once more, within the same deadline.
    """
    if deadline is None:
        deadline = time.monotonic() + time_limit
    if fast_extraction is None:
        fast_extraction = fast_extraction_setting()
    if engine_processes is None:
        engine_processes = engine_processes_setting()
    log_path = work_dir / LOG_NAME
    config_path = work_dir / "engine.cfg"
    config_path.write_text(engine_config(index_dirs, int(time_limit) + 1))
    attempts = [params]
    if params.downsample_factor > 1 and not prepared.is_star_list:
        attempts.append(replace(params, downsample_factor=1))
    sources: int | None = None
    header = _HeaderPlan(
        header_attempts,
        min(HEADER_ATTEMPT_MAX_SECONDS, HEADER_ATTEMPT_SHARE * time_limit),
        ignore_file_wcs,
    )
    for number, attempt in enumerate(attempts, start=1):
        try:
            outcome = _solve_once(
                attempt,
                prepared,
                work_dir,
                config_path,
                log_path,
                deadline,
                on_stage,
                can_retry=number < len(attempts),
                warm=warm,
                fast_extraction=fast_extraction,
                header=header,
                engine_processes=engine_processes,
            )
        except SolveTimeout:
            return SolveOutcome(
                False,
                f"Stopped after the time limit of {time_limit:g} s without a solution.",
                _extracted_sources(work_dir, sources),
                header_tried=tuple(header.tried),
            )
        if outcome.reason != RETRY_FULL_RESOLUTION:
            return replace(outcome, header_tried=tuple(header.tried))
        sources = outcome.sources
        with log_path.open("a") as log:
            log.write(
                f"\n{sources} sources and no solution with downsampling; "
                "extracting again at full resolution.\n"
            )
    raise AssertionError("the last attempt never asks for a retry")


RETRY_FULL_RESOLUTION = "retry at full resolution"


@dataclass
class _HeaderPlan:
    """The header attempts of one solve, their budget each, and those that did not solve."""

    attempts: Sequence[Attempt]
    budget: float
    ignore_file_wcs: bool
    tried: list[Attempt] = field(default_factory=list)


def fast_extraction_setting() -> bool:
    """NOVA_FAST_EXTRACTION of the running app (tasks run in one); on without an app."""
    if has_app_context():
        return bool(current_app.config.get("FAST_EXTRACTION", True))
    return True


def extract_sources(
    params: SolveParams,
    prepared: PreparedInput,
    work_dir: Path,
    log_path: Path,
    deadline: float,
    *,
    fast: bool,
    ignore_file_wcs: bool = False,
) -> int:
    """Stage 1: write ``job.axy``; returns the exit status of what wrote it (0: written).

    With ``fast``, ``extraction`` writes it in this process (C tools and numpy, no Python
    subprocess); whatever it cannot take, or any failure of it, leaves the job to
    ``solve-field --just-augment`` as before. The log says which ran.
    """
    options = augment_options(params, work_dir) + ([NO_VERIFY] if ignore_file_wcs else [])
    if fast:

        def run(cmd: list[str]) -> int:
            return run_with_deadline(cmd, work_dir, log_path, deadline)

        try:
            done = extraction.extract(
                params,
                prepared,
                work_dir,
                run=run,
                augment_options=options,
                max_sources=MAX_SOURCES,
            )
        except SolveTimeout:
            raise
        except extraction.Unsupported as exc:
            note = f"in-process extraction not used: {exc}"
        except Exception as exc:  # a failed fast path must never fail the job
            note = f"in-process extraction failed: {exc}"
        else:
            with log_path.open("a") as log:
                log.write(done.describe() + "\n")
            return 0
        (work_dir / AXY_NAME).unlink(missing_ok=True)
        with log_path.open("a") as log:
            log.write(note + "; extracting with solve-field --just-augment\n")
    command = augment_command(params, prepared, work_dir)
    if ignore_file_wcs:
        command.insert(-1, NO_VERIFY)
    return run_with_deadline(command, work_dir, log_path, deadline)


def _solve_once(
    params: SolveParams,
    prepared: PreparedInput,
    work_dir: Path,
    config_path: Path,
    log_path: Path,
    deadline: float,
    on_stage: Callable[[str], None],
    *,
    can_retry: bool,
    warm: warm_engine.WarmEngine | None = None,
    fast_extraction: bool = True,
    header: _HeaderPlan | None = None,
    engine_processes: int = 1,
) -> SolveOutcome:
    header = header or _HeaderPlan((), 0.0, False)
    for name in (AXY_NAME, WCS_NAME, CORR_NAME, RDLS_NAME, MATCH_NAME):
        (work_dir / name).unlink(missing_ok=True)
    on_stage("extracting")
    code = extract_sources(
        params,
        prepared,
        work_dir,
        log_path,
        deadline,
        fast=fast_extraction,
        ignore_file_wcs=header.ignore_file_wcs,
    )
    axy = work_dir / AXY_NAME
    if code != 0 or not axy.exists():
        return SolveOutcome(
            False, f"Source extraction failed (exit status {code}); see the log.", None
        )
    sources = count_sources(axy)
    if can_retry and sources < MIN_SOURCES_AFTER_DOWNSAMPLE:
        return SolveOutcome(False, RETRY_FULL_RESOLUTION, sources)
    if sources == 0:
        return SolveOutcome(False, "No stars were detected in the image.", 0)
    if sources < MIN_SOURCES_TO_SOLVE:
        return SolveOutcome(
            False,
            f"Only {sources} {'star was' if sources == 1 else 'stars were'} detected in the "
            f"image; at least "
            f"{MIN_SOURCES_TO_SOLVE} are needed to solve.",
            sources,
        )
    on_stage("solving")
    if header.attempts:
        solved_by = _solve_header_attempts(
            header, work_dir, config_path, log_path, deadline, warm, engine_processes
        )
        if solved_by is not None:
            return SolveOutcome(True, None, sources, solved_by=solved_by)
    code = _run_stage2(work_dir, config_path, log_path, deadline, warm, engine_processes)
    if (work_dir / WCS_NAME).exists():
        return SolveOutcome(True, None, sources)
    if code != 0:
        return SolveOutcome(False, f"The engine failed (exit status {code}); see the log.", sources)
    if can_retry:
        return SolveOutcome(False, RETRY_FULL_RESOLUTION, sources)
    return SolveOutcome(
        False,
        f"No solution found: the engine tried every index file that fits the scale range "
        f"with {sources} detected sources.",
        sources,
    )


def _run_stage2(
    work_dir: Path,
    config_path: Path,
    log_path: Path,
    deadline: float,
    warm: warm_engine.WarmEngine | None,
    processes: int = 1,
) -> int:
    """Solve ``job.axy``: scale bands raced in ``processes`` engines when its scale range is
    wide (``race_bands``), else the warm engine when it can, else ``astrometry-engine``."""
    bands = race_bands(work_dir / AXY_NAME, processes)
    if len(bands) > 1:
        return race_engines(bands, work_dir, config_path, log_path, deadline)
    solved = None if warm is None else solve_warm(warm, work_dir, log_path, deadline)
    if solved is not None:
        return 0
    return run_with_deadline(
        ["astrometry-engine", "-c", str(config_path), AXY_NAME], work_dir, log_path, deadline
    )


def engine_processes_setting() -> int:
    """NOVA_ENGINE_PROCESSES of the running app: engine processes one job may run at once;
    outside an app, one per CPU (the caller is alone, e.g. the benchmark's warm path)."""
    if has_app_context():
        return int(current_app.config.get("ENGINE_PROCESSES", 1))
    return len(os.sched_getaffinity(0))


def race_bands(axy_path: Path, processes: int) -> list[tuple[float, float]]:
    """The scale bands (arcsec per pixel) to race for ``axy_path``: one per process, or the
    job's own range alone when it is narrow, has no upper bound, or there is one process.

    A band's engine tries only the index files of its scales, so it reaches deeper into
    the source list sooner: blind apod5 (64 degrees, 856 sources) solved in 5.3 s with
    10-180 degrees against 22-27 s with 0.1-180, while the 0.1-10 band searched on without
    end; apod1-3 (1.5-8.4 degrees) are solved by the 0.1-10 band and apod4-5 (33, 64) by
    the 10-180 one (bench/RESULTS.md, "Racing scale bands"). Splits: first at the measured
    RACE_SPLIT_DEGREES inside the range, then the widest band at its geometric middle.
    Neighbours overlap by RACE_BAND_OVERLAP so a field at a boundary is in both.
    """
    if processes < 2:
        return []
    with fits.open(axy_path) as hdus:
        header = hdus[0].header
        low, high, width = header.get("ANAPPL1"), header.get("ANAPPU1"), header.get("IMAGEW")
    if low is None or high is None or not width or low <= 0 or high / low < RACE_MIN_RATIO:
        return []
    to_degrees = float(width) / 3600.0  # arcsec per pixel -> field width in degrees
    edges = [float(low) * to_degrees, float(high) * to_degrees]
    for split in RACE_SPLIT_DEGREES:
        if len(edges) - 1 < processes and edges[0] * RACE_MIN_RATIO**0.5 < split:
            if split * RACE_MIN_RATIO**0.5 < edges[-1]:
                edges = sorted({*edges, split})
    while len(edges) - 1 < processes:
        ratios = [edges[i + 1] / edges[i] for i in range(len(edges) - 1)]
        widest = max(range(len(ratios)), key=ratios.__getitem__)
        if ratios[widest] < RACE_MIN_RATIO:
            break
        edges.insert(widest + 1, (edges[widest] * edges[widest + 1]) ** 0.5)
    bands = []
    for number in range(len(edges) - 1):
        band_low = edges[number] / (RACE_BAND_OVERLAP if number > 0 else 1.0)
        band_high = edges[number + 1] * (RACE_BAND_OVERLAP if number < len(edges) - 2 else 1.0)
        bands.append((band_low / to_degrees, band_high / to_degrees))
    return bands


def race_engines(
    bands: Sequence[tuple[float, float]],
    work_dir: Path,
    config_path: Path,
    log_path: Path,
    deadline: float,
) -> int:
    """Solve ``job.axy`` once per scale band, all at once, each in its own directory and
    process group; the first solution is moved into ``work_dir`` and the other engines'
    groups are killed at once. Returns 0 (solved, or every band searched in vain) or the
    first failing exit status; raises SolveTimeout at the deadline, every engine killed."""
    racers: list[tuple[subprocess.Popen[bytes], int, Path]] = []
    winner: Path | None = None
    cancellation.check()
    try:
        with fits.open(work_dir / AXY_NAME) as hdus:
            for number, (low, high) in enumerate(bands, start=1):
                band_dir = work_dir / f"{BAND_DIR_PREFIX}{number}"
                shutil.rmtree(band_dir, ignore_errors=True)
                band_dir.mkdir()
                hdus[0].header["ANAPPL1"] = low
                hdus[0].header["ANAPPU1"] = high
                hdus.writeto(band_dir / AXY_NAME)
                with (band_dir / LOG_NAME).open("wb") as band_log:
                    process = spawn(
                        ["astrometry-engine", "-c", str(config_path), AXY_NAME],
                        band_dir,
                        band_log,
                    )
                cancellation.track_group(process.pid)  # a cancel kills every band at once
                racers.append((process, os.pidfd_open(process.pid), band_dir))
        running = {fd: (process, band_dir) for process, fd, band_dir in racers}
        failure = 0
        while running and winner is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SolveTimeout()
            ready, _, _ = select.select(list(running), [], [], remaining)
            for fd in ready:
                process, band_dir = running.pop(fd)
                code = process.wait()
                if (band_dir / WCS_NAME).exists():
                    winner = band_dir
                    break
                failure = failure or code
        _stop_racers(racers)
        cancellation.check()  # killed by a cancel: no failure to work around
        if winner is not None:
            for name in (CORR_NAME, RDLS_NAME, MATCH_NAME, WCS_NAME):  # wcs.fits last: solved
                if (winner / name).exists():
                    os.replace(winner / name, work_dir / name)
        return 0 if winner is not None else failure
    finally:
        _stop_racers(racers)
        for process, _, _ in racers:
            cancellation.forget(process.pid)
        with log_path.open("a") as log:
            for number, (process, fd, band_dir) in enumerate(racers, start=1):
                os.close(fd)
                low, high = bands[number - 1]
                if band_dir == winner:
                    end = "solved first"
                elif process.returncode is not None and process.returncode < 0:
                    end = "stopped"
                else:
                    end = f"searched to the end, exit status {process.returncode}"
                log.write(
                    f"\n--- scale band {number} of {len(racers)}: {low:g}-{high:g} arcsec/pix "
                    f"({end}) ---\n"
                )
                band_log = band_dir / LOG_NAME
                if band_log.exists():
                    log.write(band_log.read_text(errors="replace"))
                shutil.rmtree(band_dir, ignore_errors=True)


def _stop_racers(racers: Sequence[tuple[subprocess.Popen[bytes], int, Path]]) -> None:
    """SIGKILL every engine of the race still running, all groups at once, then reap them:
    a loser's search has nothing worth a grace period."""
    for process, _, _ in racers:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for process, _, _ in racers:
        process.wait()


def _solve_header_attempts(
    header: _HeaderPlan,
    work_dir: Path,
    config_path: Path,
    log_path: Path,
    deadline: float,
    warm: warm_engine.WarmEngine | None,
    processes: int = 1,
) -> Attempt | None:
    """Solve the extracted sources with each header attempt on its short budget; return the
    one that solved, or None with ``job.axy`` as extraction wrote it (the job's own hints).

    Raises SolveTimeout only when the job's own deadline has passed.
    """
    axy, base = work_dir / AXY_NAME, work_dir / JOB_AXY_BASE_NAME
    shutil.copyfile(axy, base)
    with fits.open(base) as hdus:
        width, height = int(hdus[0].header["IMAGEW"]), int(hdus[0].header["IMAGEH"])
    try:
        for number, attempt in enumerate(header.attempts, start=1):
            with log_path.open("a") as log:
                log.write(
                    f"\nHeader hint {number} of {len(header.attempts)} "
                    f"({attempt.source}: {', '.join(attempt.keywords)}), "
                    f"at most {header.budget:g} s.\n"
                )
            attempt_deadline = min(deadline, time.monotonic() + header.budget)
            try:
                solved = _solve_attempt(
                    attempt, base, width, height, work_dir, config_path, log_path,
                    attempt_deadline, warm, processes,
                )  # fmt: skip
            except SolveTimeout:
                if time.monotonic() >= deadline:
                    raise
                solved = False
                with log_path.open("a") as log:
                    log.write(f"Header hint {number} stopped after {header.budget:g} s.\n")
            if solved:
                return attempt
            if attempt not in header.tried:  # tried again at full resolution: listed once
                header.tried.append(attempt)
            for name in (WCS_NAME, CORR_NAME, RDLS_NAME, MATCH_NAME):
                (work_dir / name).unlink(missing_ok=True)
        with log_path.open("a") as log:
            log.write("\nThe header's hints did not solve; solving with the job's own.\n")
        return None
    finally:
        base.replace(axy)


def _solve_attempt(
    attempt: Attempt,
    base: Path,
    width: int,
    height: int,
    work_dir: Path,
    config_path: Path,
    log_path: Path,
    deadline: float,
    warm: warm_engine.WarmEngine | None,
    processes: int = 1,
) -> bool:
    """Write ``job.axy`` for one header attempt (the same sources, its hints) and solve it."""
    command = [
        "solve-field",
        "--just-augment",
        *augment_options(attempt.params, work_dir),
        "--depth",
        f"1-{HEADER_ATTEMPT_DEPTH}",
        "--width",
        str(width),
        "--height",
        str(height),
        # The sources are extracted, sorted and uniformized already: keep them as they are.
        "--no-remove-lines",
        "--uniformize",
        "0",
    ]
    if attempt.verify_wcs is not None:
        wcs_path = work_dir / VERIFY_WCS_NAME
        fits.PrimaryHDU(header=attempt.verify_wcs).writeto(wcs_path, overwrite=True)
        command += ["--verify", str(wcs_path)]
    (work_dir / AXY_NAME).unlink(missing_ok=True)
    if run_with_deadline([*command, str(base)], work_dir, log_path, deadline) != 0:
        return False
    _run_stage2(work_dir, config_path, log_path, deadline, warm, processes)
    return (work_dir / WCS_NAME).exists()


def solve_warm(
    warm: warm_engine.WarmEngine, work_dir: Path, log_path: Path, deadline: float
) -> bool | None:
    """Stage 2 with the warm engine: True solved, False no solution, None when
    ``astrometry-engine`` must do it (an option the library cannot take, or the library
    failed or crashed -- then the engine runs within what is left of the deadline)."""
    axy = work_dir / AXY_NAME
    job = warm_engine.read_axy(axy)
    reason = warm.supports(job)
    if reason is not None:
        with log_path.open("a") as log:
            log.write(f"warm engine not used: {reason}\n")
        return None
    try:
        return warm.solve(axy, work_dir, log_path, deadline)
    except warm_engine.WarmEngineTimeout:
        raise SolveTimeout() from None
    except warm_engine.WarmEngineCrashed as exc:
        for name in (WCS_NAME, CORR_NAME, RDLS_NAME, MATCH_NAME):
            (work_dir / name).unlink(missing_ok=True)
        with log_path.open("a") as log:
            log.write(f"\n{exc}; solving with astrometry-engine instead.\n")
        return None
