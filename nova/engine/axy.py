"""Reading ``job.axy`` as the engine does: what it asks the engine to do (its header) and
the sources to match (its table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

# astrometry-engine's defaults (blind.c, engine.c at 0.93) for what job.axy does not say.
DEFAULT_DEPTHS = tuple(range(10, 201, 10))


DEFAULT_ODDS_TO_SOLVE = 1e9


DEFAULT_ODDS_TO_TUNE_UP = 1e6


DEFAULT_QUAD_SIZE_FRACTION_LOW = 0.1  # of the image's smaller side


DEFAULT_QUAD_SIZE_FRACTION_HIGH = 1.0  # of the image's diagonal


DEFAULT_TWEAK_ORDER = 2
# Cards of job.axy the warm engine cannot honour: a job with any of them goes to
# astrometry-engine.
UNSUPPORTED_CARDS = (
    "ANCRPIXC",
    "ANCRPIX1",
    "ANCRPIX2",
    "ANDPL1",
    "ANDPU1",
    "ANODDSBL",
    "ANODDSST",
    "ANAPPL2",
    "ANXCOL",
    "ANYCOL",
)


@dataclass(frozen=True)
class AxyJob:
    """What ``job.axy`` asks the engine to do, read from its header and table."""

    width: float
    height: float
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray | None
    background: np.ndarray | None
    scale_low: float | None  # arcsec per pixel
    scale_high: float | None
    position: tuple[float, float, float] | None  # RA, Dec, radius in degrees
    parity: str  # "both", "pos" or "neg"
    tweak: bool
    tweak_order: int
    positional_error: float
    uniformize: bool
    deduplicate: bool
    odds_to_solve: float
    odds_to_tune_up: float
    quad_size_fraction_low: float
    quad_size_fraction_high: float
    unsupported: tuple[str, ...]  # header options the library cannot honour

    @property
    def diagonal(self) -> float:
        return math.hypot(self.width, self.height)

    def slices(self) -> list[tuple[int, int]]:
        """The engine's depth steps: sources 0-10, 10-20, ... 190-200, as far as there are."""
        stars = len(self.x)
        slices: list[tuple[int, int]] = []
        start = 0
        for depth in DEFAULT_DEPTHS:
            end = min(depth, stars)
            if end > start:
                slices.append((start, end))
            start = end
        return slices


def _flag(header: fits.Header, key: str, default: bool) -> bool:
    value = header.get(key)
    return default if value is None else bool(value)


def read_axy(path: Path) -> AxyJob:
    with fits.open(path) as hdus:
        header = hdus[0].header
        data = hdus[1].data
        names = {name.upper(): name for name in data.columns.names}
        x = np.asarray(data[names["X"]], dtype=float)
        y = np.asarray(data[names["Y"]], dtype=float)
        flux = np.asarray(data[names["FLUX"]], dtype=float) if "FLUX" in names else None
        background = (
            np.asarray(data[names["BACKGROUND"]], dtype=float) if "BACKGROUND" in names else None
        )
    unsupported = [key for key in UNSUPPORTED_CARDS if key in header]
    scale_low = header.get("ANAPPL1")
    scale_high = header.get("ANAPPU1")
    if scale_low is None or scale_high is None:
        unsupported.append("a scale range without both bounds")
    position = None
    if all(key in header for key in ("ANERA", "ANEDEC", "ANERAD")):
        position = (
            float(header["ANERA"]) % 360.0,
            float(header["ANEDEC"]),
            float(header["ANERAD"]),
        )
    parity = str(header.get("ANPARITY", "")).strip().upper()
    return AxyJob(
        width=float(header["IMAGEW"]),
        height=float(header["IMAGEH"]),
        x=x,
        y=y,
        flux=flux,
        background=background,
        scale_low=None if scale_low is None else float(scale_low),
        scale_high=None if scale_high is None else float(scale_high),
        position=position,
        parity={"POS": "pos", "NEG": "neg"}.get(parity, "both"),
        tweak=_flag(header, "ANTWEAK", False),
        tweak_order=int(header.get("ANTWEAKO", DEFAULT_TWEAK_ORDER)),
        positional_error=float(header.get("ANPOSERR", 1.0)),
        uniformize=_flag(header, "ANVERUNI", True),
        deduplicate=_flag(header, "ANVERDUP", False),
        odds_to_solve=float(header.get("ANODDSSL", DEFAULT_ODDS_TO_SOLVE)),
        odds_to_tune_up=float(header.get("ANODDSTU", DEFAULT_ODDS_TO_TUNE_UP)),
        quad_size_fraction_low=float(header.get("ANQSFMIN", DEFAULT_QUAD_SIZE_FRACTION_LOW)),
        quad_size_fraction_high=float(header.get("ANQSFMAX", DEFAULT_QUAD_SIZE_FRACTION_HIGH)),
        unsupported=tuple(unsupported),
    )
