"""Constants, the log line and the clock every part of the bench shares."""

from __future__ import annotations

import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # bench/nova_bench/common.py -> the checkout
SHARED_DATA = Path(os.environ.get("NOVA_TEST_DATA", REPO.parent / "shared" / "data"))
APOD = SHARED_DATA / "apod"
INDEX_DIR = Path("/usr/share/astrometry")

# Known field widths (degrees) of the samples; the scale hint is +-20% around them.
WIDTHS = {"apod1": 1.5, "apod2": 4.5, "apod3": 8.4, "apod4": 33.0, "apod5": 64.0}
# Solutions from /work/shared/reference/engine-performance.md, to check every Nova answer.
KNOWN_CENTRES = {
    "apod1": (100.2157, 9.8316),
    "apod2": (84.5772, -2.7557),
    "apod3": (130.2739, -43.8743),
    "apod4": (187.1850, 56.7134),
    "apod5": (90.2589, 4.7135),
}
HINT_FRACTION = 0.2
# nova's defaults as Nova maps them onto solve-field (nova/engine/solver.py, augment_command).
NOVA_DEFAULT_ARGS = ["--objs", "1000", "--tweak-order", "2"]
BLIND_SCALE = (0.1, 180.0)
XYLS_SIZE = (719, 507)
POLL_INTERVAL = 0.2
JOB_TIMEOUT = 420.0  # Nova's own limit is 300 s per job
BARE_TIMEOUT = 300.0
SAMPLE_INTERVAL = 0.1
THROUGHPUT_PHOTOS = ("apod2", "apod3", "apod4")


class Clock:
    """perf_counter for durations, mapped onto the wall clock to meet server timestamps."""

    def __init__(self) -> None:
        self.perf0 = time.perf_counter()
        self.epoch0 = time.time()

    def epoch(self, perf: float) -> float:
        return self.epoch0 + (perf - self.perf0)


CLOCK = Clock()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def case_key(photo: str, mode: str) -> str:
    return f"{photo} {mode}"
