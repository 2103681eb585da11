"""Header hints as first attempts of stage 2: the extracted sources, given each attempt's
scale, position and WCS to verify, are solved on a short budget before the job's own."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from astropy.io import fits

from nova.engine.commands import augment_options, augment_sources_command
from nova.engine.hints import Attempt
from nova.engine.job_files import (
    AXY_NAME,
    JOB_AXY_BASE_NAME,
    SOLUTION_NAMES,
    VERIFY_WCS_NAME,
    WCS_NAME,
)
from nova.engine.process import SolveTimeout, run_with_deadline
from nova.engine.solve_axy import EngineRun, solve_axy

# A header hint is a first attempt, never a constraint: each gets at most this share of
# the time limit (and at most HEADER_ATTEMPT_MAX_SECONDS); a hinted solve takes 0.1-0.6 s.
HEADER_ATTEMPT_SHARE = 0.1
HEADER_ATTEMPT_MAX_SECONDS = 15.0
# ... and looks at the brightest HEADER_ATTEMPT_DEPTH sources only: a right hint solves
# with them (the samples need at most 30), a wrong one fails in a fraction of a second
# instead of searching every quad near a wrong position (minutes on a 1.5-degree field).
HEADER_ATTEMPT_DEPTH = 30


@dataclass
class HeaderPlan:
    """The header attempts of one solve, their budget each, and those that did not solve."""

    attempts: Sequence[Attempt]
    budget: float
    ignore_file_wcs: bool
    tried: list[Attempt] = field(default_factory=list)


def solve_header_attempts(header: HeaderPlan, run: EngineRun) -> Attempt | None:
    """Solve the extracted sources with each header attempt on its short budget; return the
    one that solved, or None with ``job.axy`` as extraction wrote it (the job's own hints).

    Raises SolveTimeout only when the job's own deadline has passed.
    """
    work_dir, log_path, deadline = run.work_dir, run.log_path, run.deadline
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
                    attempt, base, width, height, replace(run, deadline=attempt_deadline)
                )
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
            for name in SOLUTION_NAMES:
                (work_dir / name).unlink(missing_ok=True)
        with log_path.open("a") as log:
            log.write("\nThe header's hints did not solve; solving with the job's own.\n")
        return None
    finally:
        base.replace(axy)


def _solve_attempt(attempt: Attempt, base: Path, width: int, height: int, run: EngineRun) -> bool:
    """Write ``job.axy`` for one header attempt (the same sources, its hints) and solve it."""
    work_dir = run.work_dir
    options = [*augment_options(attempt.params, work_dir), "--depth", f"1-{HEADER_ATTEMPT_DEPTH}"]
    verify: list[str] = []
    if attempt.verify_wcs is not None:
        wcs_path = work_dir / VERIFY_WCS_NAME
        fits.PrimaryHDU(header=attempt.verify_wcs).writeto(wcs_path, overwrite=True)
        verify = ["--verify", str(wcs_path)]
    command = augment_sources_command(options, width, height, base, after=verify)
    (work_dir / AXY_NAME).unlink(missing_ok=True)
    if run_with_deadline(command, work_dir, run.log_path, run.deadline) != 0:
        return False
    solve_axy(run)
    return (work_dir / WCS_NAME).exists()
