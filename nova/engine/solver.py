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

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from astropy.io import fits

from nova.engine import extraction, fieldobjects, warm_engine
from nova.engine.commands import (
    MAX_SOURCES,
    NO_VERIFY,
    augment_command,
    augment_options,
    engine_config,
)
from nova.engine.header_attempts import (
    HEADER_ATTEMPT_MAX_SECONDS,
    HEADER_ATTEMPT_SHARE,
    HeaderPlan,
    solve_header_attempts,
)
from nova.engine.hints import Attempt
from nova.engine.input_formats import PreparedInput
from nova.engine.job_files import (
    ANNOTATIONS_NAME,
    AXY_NAME,
    ENGINE_CONFIG_NAME,
    LOG_NAME,
    SOLUTION_NAMES,
    WCS_NAME,
)
from nova.engine.params import SolveParams
from nova.engine.process import SolveTimeout, run_with_deadline
from nova.engine.solve_axy import EngineRun, solve_axy

# Fewer sources than this after downsampling: extract again at full resolution, hinted or
# not. A hint does not rescue so few: apod5's 46 sources at downsample 2 fail with a scale
# hint (bare solve-field too, about 1.2 s of search) and with scale and position hints.
MIN_SOURCES_AFTER_DOWNSAMPLE = 50
# The engine matches quadrangles of stars and verifies them against more stars.
MIN_SOURCES_TO_SOLVE = 5


@dataclass(frozen=True)
class SolveOutcome:
    solved: bool
    reason: str | None  # why it failed; None when solved
    sources: int | None  # sources handed to the engine
    solved_by: Attempt | None = None  # the header attempt that solved; None: the job's own
    header_tried: tuple[Attempt, ...] = ()  # header attempts that ran and did not solve


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


# long: a keyword-only signature and its documentation; the body is one retry loop
def solve(
    params: SolveParams,
    prepared: PreparedInput,
    work_dir: Path,
    *,
    index_dirs: Sequence[Path],
    time_limit: float,
    on_stage: Callable[[str], None] = lambda stage: None,
    warm: warm_engine.WarmEngine | None = None,
    fast_extraction: bool = True,
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
    ``fast_extraction`` runs stage 1 with ``extraction`` (the worker passes its
    NOVA_FAST_EXTRACTION). ``engine_processes`` is how many engines one job may run at once
    (the worker's NOVA_ENGINE_PROCESSES; None: one per CPU, for a caller alone on the
    machine such as the benchmark's warm path).

    Downsampling (nova's default 2) makes extraction and blind solves much faster, but on
    small or soft images it can smear the stars away. When it leaves fewer than
    MIN_SOURCES_AFTER_DOWNSAMPLE sources, or the engine finds no solution, the image is
    extracted again at full resolution and solved once more, within the same deadline.
    """
    if deadline is None:
        deadline = time.monotonic() + time_limit
    if engine_processes is None:
        engine_processes = len(os.sched_getaffinity(0))
    log_path = work_dir / LOG_NAME
    config_path = work_dir / ENGINE_CONFIG_NAME
    config_path.write_text(engine_config(index_dirs, int(time_limit) + 1))
    attempts = [params]
    if params.downsample_factor > 1 and not prepared.is_star_list:
        attempts.append(replace(params, downsample_factor=1))
    sources: int | None = None
    header = HeaderPlan(
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

        note = extract_in_process(params, prepared, work_dir, log_path, run, options)
        if note is None:
            return 0
        with log_path.open("a") as log:
            log.write(note + "; extracting with solve-field --just-augment\n")
    command = augment_command(params, prepared, work_dir)
    if ignore_file_wcs:
        command.insert(-1, NO_VERIFY)
    return run_with_deadline(command, work_dir, log_path, deadline)


def extract_in_process(
    params: SolveParams,
    prepared: PreparedInput,
    work_dir: Path,
    log_path: Path,
    run: Callable[[list[str]], int],
    options: list[str],
) -> str | None:
    """Stage 1 by ``extraction`` in this process, ``run`` running its commands: None when it
    wrote ``job.axy`` (the log says how), else why not, with no ``job.axy`` left behind."""
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
        return None
    (work_dir / AXY_NAME).unlink(missing_ok=True)
    return note


def _too_few_sources(sources: int, can_retry: bool) -> SolveOutcome | None:
    """The outcome when extraction found too few sources to solve (or, downsampled, too few
    to try before extracting at full resolution); None when there are enough."""
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
    return None


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
    header: HeaderPlan | None = None,
    engine_processes: int = 1,
) -> SolveOutcome:
    header = header or HeaderPlan((), 0.0, False)
    for name in (AXY_NAME, *SOLUTION_NAMES):
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
    too_few = _too_few_sources(sources, can_retry)
    if too_few is not None:
        return too_few
    on_stage("solving")
    engine = EngineRun(work_dir, config_path, log_path, deadline, warm, engine_processes)
    if header.attempts:
        solved_by = solve_header_attempts(header, engine)
        if solved_by is not None:
            return SolveOutcome(True, None, sources, solved_by=solved_by)
    code = solve_axy(engine)
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
