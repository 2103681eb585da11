"""What a run records: its settings, the results, the machine and the software."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nova_bench.common import INDEX_DIR, REPO

# -- the run --------------------------------------------------------------------------------


@dataclass
class Settings:
    quick: bool
    photos: list[str]
    repeats: int
    clients: int
    hammer_seconds: float
    throughput_jobs: int
    naive_downsample_attempt: bool
    warm_only: bool = False  # only bare solve-field vs the warm path (no stacks)
    # Stage 2 of the warm path by the PyPI library (NOVA_WARM_ENGINE) instead of Nova's
    # default, astrometry-engine.
    warm_engine: bool = False


@dataclass
class Results:
    settings: Settings
    machine_before: dict[str, Any] = field(default_factory=dict)
    machine_after: dict[str, Any] = field(default_factory=dict)
    bare: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    nova: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    reupload: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    # The warm path in this process: nova.engine.solver.solve with the warm engine (no stack).
    warm: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    warm_load_seconds: float | None = None
    # Stage 1 alone per photo: solve-field --just-augment vs the in-process extraction.
    stage1: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    hammer_solving: dict[str, Any] = field(default_factory=dict)
    hammer_idle: dict[str, Any] = field(default_factory=dict)
    hammered_job: dict[str, Any] = field(default_factory=dict)
    throughput: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    server: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    total_seconds: float = 0.0


def machine_info() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "model": model,
        "ram_gib": mem_kb / 1024 / 1024,
        "loadavg": os.getloadavg(),
        "kernel": platform.release(),
    }


def software_info() -> dict[str, str]:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=20, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    indexes = sorted(INDEX_DIR.glob("index-*.fits"))
    size = sum(p.stat().st_size for p in indexes)
    return {
        "astrometry.net": run(["dpkg-query", "-W", "-f", "${Version}", "astrometry.net"]),
        "python": platform.python_version(),
        "nova commit": run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "index files": f"{len(indexes)} files, {size / 1e6:.0f} MB in {INDEX_DIR}",
    }
