"""Racing scale bands: a blind or wide-hinted solve split into bands of pixel scale, each
solved by its own ``astrometry-engine`` at once; the first solution wins and the others are
killed."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from astropy.io import fits

from nova.engine import process
from nova.engine.commands import engine_command
from nova.engine.job_files import AXY_NAME, BAND_DIR_PREFIX, LOG_NAME, SOLUTION_NAMES, WCS_NAME
from nova.engine.process import SolveTimeout, spawn

# Only a range at least RACE_MIN_RATIO wide (high / low) is split -- a +-20 % hint (1.5x)
# solves in 0.1-0.3 s and a second engine would only add CPU; the first split is at the
# measured RACE_SPLIT_DEGREES of field width; neighbouring bands overlap by RACE_BAND_OVERLAP.
RACE_MIN_RATIO = 4.0
RACE_SPLIT_DEGREES = (10.0,)
RACE_BAND_OVERLAP = 1.1
Racer = tuple[subprocess.Popen[bytes], int, Path]  # the engine, its pidfd, its directory


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
    racers: list[Racer] = []
    winner: Path | None = None
    process.tracker.check()
    try:
        _start_racers(bands, work_dir, config_path, racers)
        winner, failure = _first_solution(racers, deadline)
        _stop_racers(racers)
        process.tracker.check()  # killed by a cancel: no failure to work around
        if winner is not None:
            for name in SOLUTION_NAMES:
                if (winner / name).exists():
                    os.replace(winner / name, work_dir / name)
        return 0 if winner is not None else failure
    finally:
        _stop_racers(racers)
        for racer, _, _ in racers:
            process.tracker.forget(racer.pid)
        _log_race(bands, racers, winner, log_path)


def _start_racers(
    bands: Sequence[tuple[float, float]], work_dir: Path, config_path: Path, racers: list[Racer]
) -> None:
    """Start one engine per band in a directory of its own, each added to ``racers`` as it
    starts (whatever started is stopped by the caller, even when a later one fails)."""
    with fits.open(work_dir / AXY_NAME) as hdus:
        for number, (low, high) in enumerate(bands, start=1):
            band_dir = work_dir / f"{BAND_DIR_PREFIX}{number}"
            shutil.rmtree(band_dir, ignore_errors=True)
            band_dir.mkdir()
            hdus[0].header["ANAPPL1"] = low
            hdus[0].header["ANAPPU1"] = high
            hdus.writeto(band_dir / AXY_NAME)
            with (band_dir / LOG_NAME).open("wb") as band_log:
                racer = spawn(engine_command(config_path), band_dir, band_log)
            process.tracker.track_group(racer.pid)  # a cancel kills every band at once
            racers.append((racer, os.pidfd_open(racer.pid), band_dir))


def _first_solution(racers: Sequence[Racer], deadline: float) -> tuple[Path | None, int]:
    """Wait for the engines to end: the directory of the first that solved (None: none
    did) and the first failing exit status; SolveTimeout at the deadline."""
    running = {fd: (racer, band_dir) for racer, fd, band_dir in racers}
    failure = 0
    while running:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SolveTimeout()
        ready, _, _ = select.select(list(running), [], [], remaining)
        for fd in ready:
            racer, band_dir = running.pop(fd)
            code = racer.wait()
            if (band_dir / WCS_NAME).exists():
                return band_dir, failure
            failure = failure or code
    return None, failure


def _log_race(
    bands: Sequence[tuple[float, float]],
    racers: Sequence[Racer],
    winner: Path | None,
    log_path: Path,
) -> None:
    """Append each band's log to the job's, with how it ended; remove the band directories."""
    with log_path.open("a") as log:
        for number, (racer, fd, band_dir) in enumerate(racers, start=1):
            os.close(fd)
            low, high = bands[number - 1]
            if band_dir == winner:
                end = "solved first"
            elif racer.returncode is not None and racer.returncode < 0:
                end = "stopped"
            else:
                end = f"searched to the end, exit status {racer.returncode}"
            log.write(
                f"\n--- scale band {number} of {len(racers)}: {low:g}-{high:g} arcsec/pix "
                f"({end}) ---\n"
            )
            band_log = band_dir / LOG_NAME
            if band_log.exists():
                log.write(band_log.read_text(errors="replace"))
            shutil.rmtree(band_dir, ignore_errors=True)


def _stop_racers(racers: Sequence[Racer]) -> None:
    """SIGKILL every engine of the race still running, all groups at once, then reap them:
    a loser's search has nothing worth a grace period."""
    for racer, _, _ in racers:
        if racer.poll() is None:
            try:
                os.killpg(racer.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for racer, _, _ in racers:
        racer.wait()
