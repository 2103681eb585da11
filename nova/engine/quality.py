"""How good a solution is, from the engine's own files: ``match.fits`` (the best match's
log-odds, stars matched, field and index stars, which index) and ``corr.fits`` (the matched
pairs, whose sky distances give the RMS); the tweak order is the SIP order of ``wcs.fits``.

Recorded when a job solves (``Job.quality``) and answered by ``/api/jobs/J/info`` as
``quality``; jobs solved before it was recorded answer null.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from nova.engine.job_files import CORR_NAME, MATCH_NAME, WCS_NAME

KEYS = (
    "log_odds",
    "matched_stars",
    "field_stars",
    "index_stars",
    "index",
    "rms_arcsec",
    "tweak_order",
)


def rms_arcsec(corr_path: Path) -> float | None:
    """Root mean square sky distance (arcsec) between each matched source, through the
    solution, and its reference star; None without pairs."""
    with fits.open(corr_path) as hdus:
        data = hdus[1].data
        if data is None or len(data) == 0:
            return None
        ra1, dec1 = np.radians(data["field_ra"]), np.radians(data["field_dec"])
        ra2, dec2 = np.radians(data["index_ra"]), np.radians(data["index_dec"])
    # Haversine: exact for the sub-arcsecond distances where the cosine formula is not.
    half = (
        np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    )
    distance = 2 * np.arcsin(np.sqrt(np.clip(half, 0.0, 1.0)))
    return float(math.degrees(math.sqrt(float(np.mean(distance**2)))) * 3600.0)


def tweak_order(wcs_path: Path) -> int:
    """The solution's SIP order (0: plain TAN, no tweak)."""
    header = fits.getheader(wcs_path)
    return int(header.get("A_ORDER", 0)) if "SIP" in str(header.get("CTYPE1", "")) else 0


def read_quality(work_dir: Path) -> dict[str, Any] | None:
    """The quality record of a solved job's directory, or None when the engine wrote no
    match file (a solve without one: nothing to say)."""
    match_path = work_dir / MATCH_NAME
    if not match_path.is_file():
        return None
    with fits.open(match_path) as hdus:
        data = hdus[1].data
        if data is None or len(data) == 0:
            return None
        best = data[0]
        record: dict[str, Any] = {
            "log_odds": float(best["LOGODDS"]),
            "matched_stars": int(best["NMATCH"]),
            "field_stars": int(best["NFIELD"]),
            "index_stars": int(best["NINDEX"]),
            "index": int(best["INDEXID"]),
        }
    corr_path, wcs_path = work_dir / CORR_NAME, work_dir / WCS_NAME
    record["rms_arcsec"] = rms_arcsec(corr_path) if corr_path.is_file() else None
    record["tweak_order"] = tweak_order(wcs_path) if wcs_path.is_file() else None
    return record
