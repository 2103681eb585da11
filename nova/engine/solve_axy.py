"""Stage 2: solve the extracted sources in ``job.axy``, with scale bands raced in parallel
engines, the warm engine, or ``astrometry-engine``."""

from __future__ import annotations

from pathlib import Path

from nova.engine import warm_engine
from nova.engine.axy import read_axy
from nova.engine.commands import engine_command
from nova.engine.job_files import AXY_NAME, SOLUTION_NAMES
from nova.engine.process import SolveTimeout, run_with_deadline
from nova.engine.race import race_bands, race_engines


def solve_axy(
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
    return run_with_deadline(engine_command(config_path), work_dir, log_path, deadline)


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
