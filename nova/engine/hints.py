"""Scale and position hints from what the file already says about itself.

Capture software writes the optics and the pointing into every frame: FITS cards (N.I.N.A.,
SGP, KStars/Ekos, MaxIm DL, SharpCap, APT), XISF FITSKeyword and Property elements
(PixInsight, N.I.N.A.), EXIF tags (cameras). ``header_hints`` turns them into the
``HeaderHints`` declared here (``header_files`` reads them from a prepared upload);
``plan_attempts`` turns those into first attempts for the solver: the header's hints fill
only what the user did not give, on a short budget, and the user's own parameters (blind
when there are none) always run afterwards within the same time limit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from astropy.io import fits

from nova.engine.params import SolveParams

SOURCE_FITS = "fits-header"
SOURCE_XISF = "xisf"
SOURCE_EXIF = "exif"
SOURCE_USER = "user"
SOURCE_NONE = "none"  # no hint at all: a blind solve
SOURCE_LABELS = {SOURCE_FITS: "the FITS header", SOURCE_XISF: "the XISF file", SOURCE_EXIF: "EXIF"}

MAX_HEADER_CARDS = 5000  # a FITS header of capture software has 50-300 cards

# An explicit arcsec/px keyword or a solved WCS is measured, not derived.
MEASURED_SCALE_TOLERANCE = 0.05
# A mount's pointing (unsynced, or a header written before a slew settled) is off by a
# few degrees; the position hint's radius is the field diagonal plus this.
MOUNT_ERROR_DEGREES = 3.0
# A header position without any scale: the widest field the Tycho-2 indexes solve.
RADIUS_WITHOUT_SCALE = 40.0


@dataclass(frozen=True)
class Scale:
    lower: float  # arcsec per pixel
    upper: float
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class Position:
    ra: float  # degrees
    dec: float
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class HeaderHints:
    """What one header says, checked; ``notes`` say what was ignored and why."""

    source: str
    scale: Scale | None = None
    position: Position | None = None
    wcs: fits.Header | None = None  # a checked celestial TAN WCS, to verify first
    wcs_scale: float | None = None  # its arcsec per pixel
    wcs_centre: tuple[float, float] | None = None  # RA, Dec of the image centre
    wcs_keywords: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """One first attempt from a header: the parameters to solve with, a WCS to verify."""

    params: SolveParams
    source: str
    keywords: tuple[str, ...]
    parts: tuple[str, ...]  # what the header gave: "scale", "position" (the rest: the user)
    verify_wcs: fits.Header | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "keywords": list(self.keywords),
            **used_hints(self.params),
            "from_header": list(self.parts),
            "wcs_verify_first": self.verify_wcs is not None,
        }


def _field_radius(scale_upper: float | None, width: int, height: int) -> float:
    """Position hint radius: the field diagonal plus the mount's error, in degrees."""
    if scale_upper is None:
        return RADIUS_WITHOUT_SCALE
    diagonal = scale_upper * math.hypot(width, height) / 3600.0
    return min(180.0, diagonal + MOUNT_ERROR_DEGREES)


# -- FITS cards ----------------------------------------------------------------------------


# -- XISF ----------------------------------------------------------------------------------


# -- EXIF ----------------------------------------------------------------------------------


# -- attempts ------------------------------------------------------------------------------


def used_hints(params: SolveParams) -> dict[str, Any]:
    """The scale and position hints of ``params``, as the job's ``hints`` record shows them."""
    scale = None
    if params.has_scale_hint:
        bounds = params.scale_bounds()
        if bounds is not None:
            scale = {"lower": bounds[0], "upper": bounds[1], "units": params.scale_units}
    position = None
    if params.has_position_hint:
        position = {"ra": params.center_ra, "dec": params.center_dec, "radius": params.radius}
    return {"scale": scale, "position": position}


def _with(
    params: SolveParams,
    scale: tuple[float, float] | None,
    position: tuple[float, float, float] | None,
) -> SolveParams:
    if scale is not None:
        params = replace(
            params,
            scale_units="arcsecperpix",
            scale_type="ul",
            scale_lower=scale[0],
            scale_upper=scale[1],
            scale_est=None,
            scale_err=None,
        )
    if position is not None:
        params = replace(params, center_ra=position[0], center_dec=position[1], radius=position[2])
    return params


def _scale_upper_arcsec(params: SolveParams, width: int, height: int) -> float | None:
    """The user's scale hint as arcsec per pixel (upper bound), when it can be converted."""
    bounds = params.scale_bounds()
    if bounds is None or not params.has_scale_hint:
        return None
    upper = bounds[1]
    side = max(width, 1)
    return {
        "arcsecperpix": upper,
        "degwidth": upper * 3600.0 / side,
        "arcminwidth": upper * 60.0 / side,
    }.get(params.scale_units)


def plan_attempts(
    params: SolveParams, hints: HeaderHints | None, width: int, height: int
) -> list[Attempt]:
    """First attempts from the header, in order, before the user's own parameters run.

    Explicit hints always win: a header fills only the scale or the position the user did
    not give. A verified-first WCS comes first, then the header's keywords, then (when the
    header gave a position) its scale alone, in case the mount pointed elsewhere.
    """
    if hints is None:
        return []
    user_scale = params.has_scale_hint
    user_position = params.has_position_hint
    if user_scale and user_position:
        return []
    attempts: list[Attempt] = []
    if hints.wcs is not None and not user_scale and not user_position:
        assert hints.wcs_scale is not None and hints.wcs_centre is not None
        scale = hints.wcs_scale
        bounds = (scale * (1 - MEASURED_SCALE_TOLERANCE), scale * (1 + MEASURED_SCALE_TOLERANCE))
        radius = _field_radius(bounds[1], width, height)
        attempts.append(
            Attempt(
                _with(params, bounds, (*hints.wcs_centre, radius)),
                hints.source,
                hints.wcs_keywords,
                ("scale", "position"),
                verify_wcs=hints.wcs,
            )
        )
    scale_hint = None if user_scale or hints.scale is None else hints.scale
    position_hint = None if user_position or hints.position is None else hints.position
    if scale_hint is None and position_hint is None:
        return attempts
    if scale_hint is not None:
        upper: float | None = scale_hint.upper
    else:
        upper = _scale_upper_arcsec(params, width, height)
    position = (
        (position_hint.ra, position_hint.dec, _field_radius(upper, width, height))
        if position_hint is not None
        else None
    )
    keywords = (scale_hint.keywords if scale_hint else ()) + (
        position_hint.keywords if position_hint else ()
    )
    scale = (scale_hint.lower, scale_hint.upper) if scale_hint else None
    parts = (("scale",) if scale_hint else ()) + (("position",) if position_hint else ())
    attempts.append(Attempt(_with(params, scale, position), hints.source, keywords, parts))
    if scale_hint is not None and position_hint is not None:
        attempts.append(
            Attempt(_with(params, scale, None), hints.source, scale_hint.keywords, ("scale",))
        )
    return attempts


def job_record(
    params: SolveParams,
    header: HeaderHints | None,
    solved_by: Attempt | None,
    tried: Sequence[Attempt],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The job's ``hints``: where the hints of the solve (or of its last attempt) came
    from, what they were, the header attempts that did not solve, and what was ignored."""
    if solved_by is not None:
        record = solved_by.describe()
    else:
        used = used_hints(params)
        given = [part for part in ("scale", "position") if used[part] is not None]
        record = {
            "source": SOURCE_USER if given else SOURCE_NONE,
            "keywords": [],
            **used,
            "from_header": [],
            "wcs_verify_first": False,
        }
    record["header_tried"] = [attempt.describe() for attempt in tried]
    record["notes"] = [*(header.notes if header else ()), *notes]
    return record


def describe_source(record: dict[str, Any]) -> str:
    """The result page's sentence for a job's ``hints`` record, e.g. "Scale and position
    from the FITS header (FOCALLEN, XPIXSZ, RA, DEC)."."""
    source = record.get("source")
    used = [part for part in ("scale", "position") if record.get(part) is not None]
    if source in SOURCE_LABELS:
        from_header = record.get("from_header") or used
        keywords = ", ".join(record.get("keywords") or [])
        verified = ", its WCS verified first" if record.get("wcs_verify_first") else ""
        text = (
            f"{' and '.join(from_header).capitalize()} from {SOURCE_LABELS[source]} "
            f"({keywords}{verified})"
        )
        rest = [part for part in used if part not in from_header]
        if rest:
            text += f"; {' and '.join(rest)} from the upload options"
        return text + "."
    if source == SOURCE_USER:
        text = f"{' and '.join(used).capitalize()} from the upload options."
    else:
        text = "No scale or position hint: a blind solve."
    tried = record.get("header_tried") or []
    if tried:
        label = SOURCE_LABELS.get(tried[0].get("source"), "the header")
        keywords = sorted({k for attempt in tried for k in attempt.get("keywords", [])})
        text = f"The hints from {label} ({', '.join(keywords)}) did not solve. " + text
    return text


# -- reading a file's header (the only file access here) -----------------------------------
