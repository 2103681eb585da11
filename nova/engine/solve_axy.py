"""Stage 2: solve the extracted sources in ``job.axy``, with scale bands raced in parallel
engines, the warm engine, or ``astrometry-engine``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nova.engine import warm_engine
from nova.engine.axy import read_axy
from nova.engine.commands import engine_command
from nova.engine.job_files import AXY_NAME, SOLUTION_NAMES
from nova.engine.process import SolveTimeout, run_with_deadline
from nova.engine.race import race_bands, race_engines


@dataclass(frozen=True)
class EngineRun:
    """Where and how stage 2 runs: the job's directory, engine config and log, the deadline,
    the warm engine if there is one, and how many engines may race."""

    work_dir: Path
    config_path: Path
    log_path: Path
    deadline: float
    warm: warm_engine.WarmEngine | None
    processes: int = 1


def solve_axy(run: EngineRun) -> int:
    """Solve ``job.axy``: scale bands raced in ``run.processes`` engines when its scale range
    is wide (``race_bands``), else the warm engine when it can, else ``astrometry-engine``."""
    work_dir, log_path, deadline = run.work_dir, run.log_path, run.deadline
    bands = race_bands(work_dir / AXY_NAME, run.processes)
    if len(bands) > 1:
        return race_engines(bands, work_dir, run.config_path, log_path, deadline)
    solved = None if run.warm is None else solve_warm(run.warm, work_dir, log_path, deadline)
    if solved is not None:
        return 0
    return run_with_deadline(engine_command(run.config_path), work_dir, log_path, deadline)


def solve_warm(
    warm: warm_engine.WarmEngine, work_dir: Path, log_path: Path, deadline: float
) -> bool | None:
    """Stage 2 with the warm engine: True solved, False no solution, None when
    ``astrometry-engine`` must do it (an option the library cannot take, or the library
    failed or crashed -- then the engine runs within what is left of the deadline)."""
    axy = work_dir / AXY_NAME
    job = read_axy(axy)
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
        for name in SOLUTION_NAMES:
            (work_dir / name).unlink(missing_ok=True)
        with log_path.open("a") as log:
            log.write(f"\n{exc}; solving with astrometry-engine instead.\n")
        return None
