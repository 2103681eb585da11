"""Bare ``solve-field`` runs, the baseline Nova is compared against."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nova.engine.process import spawn
from nova_bench.common import (
    APOD,
    BARE_TIMEOUT,
    BLIND_SCALE,
    HINT_FRACTION,
    NOVA_DEFAULT_ARGS,
    WIDTHS,
    case_key,
)
from nova_bench.memory import MemorySampler
from nova_bench.processes import kill_group
from nova_bench.results import Settings


def scale_bounds(photo: str, hinted: bool) -> tuple[float, float]:
    if not hinted:
        return BLIND_SCALE
    width = WIDTHS[photo]
    return round(width * (1 - HINT_FRACTION), 6), round(width * (1 + HINT_FRACTION), 6)


def bare_command(
    source: Path, out_dir: Path, bounds: tuple[float, float], downsample: int, extra: list[str]
) -> list[str]:
    return [
        "solve-field",
        "--no-plots",
        "--overwrite",
        "--dir",
        str(out_dir),
        *NOVA_DEFAULT_ARGS,
        "--scale-units",
        "degwidth",
        "--scale-low",
        repr(bounds[0]),
        "--scale-high",
        repr(bounds[1]),
        *(["--downsample", str(downsample)] if downsample > 1 else []),
        *extra,
        str(source),
    ]


def run_bare(
    source: Path,
    bounds: tuple[float, float],
    downsample: int,
    work_root: Path,
    sampler: MemorySampler,
    label: str,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """One timed ``solve-field`` run; returns wall time and whether it solved."""
    out_dir = Path(tempfile.mkdtemp(dir=work_root, prefix="bare-"))
    cmd = bare_command(source, out_dir, bounds, downsample, extra or [])
    log_path = out_dir / "solve-field.log"
    sampler.label = label
    with log_path.open("wb") as log:
        start = time.perf_counter()
        process = spawn(cmd, out_dir, log)  # its own process group, dies with this process
        sampler.watch("bare", process.pid)
        timed_out = False
        try:
            code = process.wait(timeout=BARE_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_group(process)
            code, timed_out = None, True
        except BaseException:
            kill_group(process)
            raise
        finally:
            sampler.unwatch("bare")
        wall = time.perf_counter() - start
    solved = (out_dir / f"{source.stem}.solved").exists()
    shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "wall": wall,
        "solved": solved,
        "timed_out": timed_out,
        "exit": code,
        "downsample": downsample,
        "command": " ".join(cmd),
    }


# -- the Nova stack -------------------------------------------------------------------------


# Cases whose downsampled bare run failed: the next repeat goes straight to full resolution.
FAILED_DOWNSAMPLED: dict[str, dict[str, Any]] = {}


def bare_attempts(
    image: Path,
    bounds: tuple[float, float],
    work_root: Path,
    sampler: MemorySampler,
    key: str,
    settings: Settings,
) -> dict[str, Any]:
    """solve-field as a user runs it: --downsample 2 first, full resolution if that fails.

    A downsampled attempt that failed once fails every time (same input, same search), so
    later repetitions reuse its first time instead of running it again: the failed blind
    apod5 attempt alone takes minutes.
    """
    label = f"bare {key}"
    first = FAILED_DOWNSAMPLED.get(key)
    if first is None:
        if not settings.naive_downsample_attempt and key == case_key("apod5", "blind"):
            first = {"wall": float("nan"), "solved": False, "skipped": True, "downsample": 2}
        else:
            first = run_bare(image, bounds, 2, work_root, sampler, label)
        if first["solved"]:
            return {**first, "wall_user": first["wall"], "wall_direct": first["wall"]}
        FAILED_DOWNSAMPLED[key] = first
    second = run_bare(image, bounds, 1, work_root, sampler, label)
    return {
        **second,
        "first_attempt": first,
        "wall_user": first["wall"] + second["wall"],
        "wall_direct": second["wall"],
    }


@dataclass(frozen=True)
class PhotoCase:
    """One timed repetition of a sample photo, blind or with a scale hint."""

    photo: str
    mode: str  # "blind" or "hinted"
    rep: int

    @property
    def image(self) -> Path:
        return APOD / f"{self.photo}.jpg"

    @property
    def hinted(self) -> bool:
        return self.mode == "hinted"

    @property
    def key(self) -> str:
        return case_key(self.photo, self.mode)

    @property
    def bounds(self) -> tuple[float, float]:
        return scale_bounds(self.photo, self.hinted)


def photo_cases(settings: Settings) -> Iterator[PhotoCase]:
    """Every photo, blind then hinted, each repeated: the order bare and Nova runs interleave."""
    for photo in settings.photos:
        for mode in ("blind", "hinted"):
            for rep in range(settings.repeats):
                yield PhotoCase(photo, mode, rep)
