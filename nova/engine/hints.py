"""Scale and position hints from what the file already says about itself.

Capture software writes the optics and the pointing into every frame: FITS cards (N.I.N.A.,
SGP, KStars/Ekos, MaxIm DL, SharpCap, APT), XISF FITSKeyword and Property elements
(PixInsight, N.I.N.A.), EXIF tags (cameras). This module turns them into hints:

* ``from_fits_cards``, ``from_xisf`` and ``from_exif`` are pure functions over a bounded
  header (a list of keyword/value pairs, at most ``MAX_HEADER_CARDS``): every value is
  checked and anything hostile or broken (NaN, text, 1e308, a negative focal length, RA 400,
  a WCS with a singular matrix) is left out with a note, never an exception;
* ``plan_attempts`` turns them into first attempts for the solver: the header's hints fill
  only what the user did not give, on a short budget, and the user's own parameters (blind
  when there are none) always run afterwards within the same time limit;
* ``read_header`` is the only part that reads a file: the header of the image the worker
  prepared, bounded, so that a sandbox can run it as it runs the input readers.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from nova.engine.inputs import (
    MAX_XISF_HEADER_BYTES,
    HeaderSource,
    PreparedInput,
    check_xisf_header_size,
)
from nova.engine.params import SolveParams

log = logging.getLogger(__name__)

SOURCE_FITS = "fits-header"
SOURCE_XISF = "xisf"
SOURCE_EXIF = "exif"
SOURCE_USER = "user"
SOURCE_NONE = "none"  # no hint at all: a blind solve
SOURCE_LABELS = {SOURCE_FITS: "the FITS header", SOURCE_XISF: "the XISF file", SOURCE_EXIF: "EXIF"}

MAX_HEADER_CARDS = 5000  # a FITS header of capture software has 50-300 cards
MAX_TEXT_VALUE = 80  # a FITS card's value is at most 70 characters; XISF strings are cut

ARCSEC_PER_RADIAN = 206264.806
# Scale from pixel size and focal length: the optics are known to a few per cent (focal
# reducers, focusing), so the engine searches +-10 % around every reading.
SCALE_TOLERANCE = 0.10
# An explicit arcsec/px keyword or a solved WCS is measured, not derived.
MEASURED_SCALE_TOLERANCE = 0.05
# 35 mm-equivalent focal lengths are rounded and defined on the diagonal by some makers.
EQUIVALENT_FOCAL_TOLERANCE = 0.15
# A mount's pointing (unsynced, or a header written before a slew settled) is off by a
# few degrees; the position hint's radius is the field diagonal plus this.
MOUNT_ERROR_DEGREES = 3.0
# A header position without any scale: the widest field the Tycho-2 indexes solve.
RADIUS_WITHOUT_SCALE = 40.0

# Plausible ranges: anything outside is a broken header, not optics.
FOCAL_MM = (1.0, 100_000.0)
PIXEL_UM = (0.5, 100.0)
BINNING = (1, 16)
ARCSEC_PER_PIXEL = (0.01, 3600.0)


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


@dataclass
class _Reader:
    """Checks values one by one and remembers why it refused each."""

    notes: list[str] = field(default_factory=list)

    def number(self, name: str, value: Any, low: float, high: float, what: str) -> float | None:
        if value is None:
            return None
        number = _as_float(value)
        if number is None:
            self.notes.append(f"{name} ignored: not a number ({_shown(value)})")
            return None
        if not low <= number <= high:
            self.notes.append(
                f"{name} ignored: {_shown(value)} is not a plausible {what} ({low:g} to {high:g})"
            )
            return None
        return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _as_float(value: Any) -> float | None:
    """A finite number from a header value (numbers, or text holding one), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
    elif isinstance(value, str) and len(value) <= MAX_TEXT_VALUE:
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


_SEXAGESIMAL = re.compile(
    r"^\s*([+-]?)\s*(\d{1,3})[\s:hd°]+(\d{1,2})(?:[\s:m']+(\d{1,2}(?:\.\d*)?))?\s*[s\"]?\s*$"
)


def parse_sexagesimal(text: str) -> float | None:
    """'05 35 17.3', '05:35:17', '-05 23 28' or '+12d30m' as a signed number of units."""
    if not isinstance(text, str) or len(text) > MAX_TEXT_VALUE:
        return None
    match = _SEXAGESIMAL.match(text)
    if match is None:
        return None
    sign, whole, minutes, seconds = match.groups()
    if int(minutes) >= 60 or (seconds is not None and float(seconds) >= 60):
        return None
    value = int(whole) + int(minutes) / 60 + (float(seconds) if seconds else 0.0) / 3600
    return -value if sign == "-" else value


def _field_radius(scale_upper: float | None, width: int, height: int) -> float:
    """Position hint radius: the field diagonal plus the mount's error, in degrees."""
    if scale_upper is None:
        return RADIUS_WITHOUT_SCALE
    diagonal = scale_upper * math.hypot(width, height) / 3600.0
    return min(180.0, diagonal + MOUNT_ERROR_DEGREES)


# -- FITS cards ----------------------------------------------------------------------------


def cards_from_header(header: fits.Header) -> list[tuple[str, Any]]:
    """The first MAX_HEADER_CARDS (keyword, value) pairs of an astropy header."""
    pairs: list[tuple[str, Any]] = []
    for card in header.cards:
        if len(pairs) >= MAX_HEADER_CARDS:
            break
        try:
            keyword, value = card.keyword, card.value
        except Exception:  # astropy parses a malformed card only when it is read
            continue
        if keyword in ("", "COMMENT", "HISTORY"):
            continue
        pairs.append((str(keyword).upper(), value))
    return pairs


def from_fits_cards(
    cards: Iterable[tuple[str, Any]], width: int, height: int, *, source: str = SOURCE_FITS
) -> HeaderHints:
    """Hints from FITS keywords (the first value of each keyword counts)."""
    values: dict[str, Any] = {}
    for count, (keyword, value) in enumerate(cards):
        if count >= MAX_HEADER_CARDS:
            break
        values.setdefault(str(keyword).upper().strip(), value)
    reader = _Reader()
    scale = _fits_scale(values, reader)
    position = _fits_position(values, reader)
    wcs = _checked_wcs(values, width, height, reader)
    return HeaderHints(
        source=source,
        scale=scale,
        position=position,
        wcs=wcs[0] if wcs else None,
        wcs_scale=wcs[1] if wcs else None,
        wcs_centre=wcs[2] if wcs else None,
        wcs_keywords=wcs[3] if wcs else (),
        notes=tuple(reader.notes),
    )


def _fits_scale(values: dict[str, Any], reader: _Reader) -> Scale | None:
    for name in ("PIXSCALE", "SCALE", "SECPIX", "SECPIX1"):
        if name in values:
            scale = reader.number(name, values[name], *ARCSEC_PER_PIXEL, "scale in arcsec/px")
            if scale is not None:
                return Scale(
                    scale * (1 - MEASURED_SCALE_TOLERANCE),
                    scale * (1 + MEASURED_SCALE_TOLERANCE),
                    (name,),
                )
    focal = reader.number("FOCALLEN", values.get("FOCALLEN"), *FOCAL_MM, "focal length in mm")
    pixel_name = next((n for n in ("XPIXSZ", "PIXSIZE1", "YPIXSZ") if n in values), None)
    pixel = (
        reader.number(pixel_name, values[pixel_name], *PIXEL_UM, "pixel size in µm")
        if pixel_name
        else None
    )
    if focal is None or pixel is None or pixel_name is None:
        return None
    keywords: tuple[str, ...] = ("FOCALLEN", pixel_name)
    unbinned = ARCSEC_PER_RADIAN * pixel / 1000.0 / focal
    readings = [unbinned]
    binning = None
    for name in ("XBINNING", "BINNING", "XBIN"):
        if name in values:
            binning = reader.number(name, values[name], *BINNING, "binning")
            if binning is not None:
                keywords += (name,)
                break
    if binning is not None and binning > 1:
        # Capture programs disagree whether XPIXSZ is the binned or the unbinned pixel
        # (MaxIm and N.I.N.A. multiply by the binning, others do not): try both readings.
        readings.append(unbinned * binning)
    low = min(readings) * (1 - SCALE_TOLERANCE)
    high = max(readings) * (1 + SCALE_TOLERANCE)
    if not (ARCSEC_PER_PIXEL[0] <= low and high <= ARCSEC_PER_PIXEL[1]):
        reader.notes.append(
            f"FOCALLEN and {pixel_name} ignored: they give {unbinned:.3g} arcsec/px, "
            "not a plausible scale"
        )
        return None
    return Scale(low, high, keywords)


def _fits_position(values: dict[str, Any], reader: _Reader) -> Position | None:
    for ra_name, dec_name in (("RA", "DEC"), ("OBJCTRA", "OBJCTDEC"), ("RA_OBJ", "DEC_OBJ")):
        if ra_name not in values and dec_name not in values:
            continue
        raw_ra, raw_dec = values.get(ra_name), values.get(dec_name)
        if raw_ra is None or raw_dec is None:
            reader.notes.append(f"{ra_name}/{dec_name} ignored: only one of them is given")
            continue
        ra = _as_float(raw_ra) if ra_name != "OBJCTRA" else None
        if ra is None:
            hours = parse_sexagesimal(raw_ra) if isinstance(raw_ra, str) else None
            ra = None if hours is None else hours * 15.0  # sexagesimal RA is in hours
        dec = _as_float(raw_dec) if dec_name != "OBJCTDEC" else None
        if dec is None:
            dec = parse_sexagesimal(raw_dec) if isinstance(raw_dec, str) else None
        if ra is None or not 0.0 <= ra <= 360.0:
            reader.notes.append(f"{ra_name} ignored: {_shown(raw_ra)} is not a right ascension")
            continue
        if dec is None or not -90.0 <= dec <= 90.0:
            reader.notes.append(f"{dec_name} ignored: {_shown(raw_dec)} is not a declination")
            continue
        return Position(ra % 360.0, dec, (ra_name, dec_name))
    return None


WCS_KEYWORDS = (
    "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1",
    "CD2_2", "CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CROTA2", "CUNIT1",
    "CUNIT2", "EQUINOX", "RADESYS", "LONPOLE", "LATPOLE",
)  # fmt: skip


def _checked_wcs(
    values: dict[str, Any], width: int, height: int, reader: _Reader
) -> tuple[fits.Header, float, tuple[float, float], tuple[str, ...]] | None:
    """The header's celestial TAN WCS, when it is one that can be verified: celestial axes,
    finite numbers, an invertible matrix and a plausible scale. SIP terms are left out (the
    engine fits its own); only the linear part is verified."""
    ctype1, ctype2 = values.get("CTYPE1"), values.get("CTYPE2")
    if ctype1 is None and ctype2 is None:
        return None
    if not (
        isinstance(ctype1, str)
        and isinstance(ctype2, str)
        and ctype1.upper().startswith("RA---TAN")
        and ctype2.upper().startswith("DEC--TAN")
    ):
        reader.notes.append(
            f"WCS ignored: CTYPE1/CTYPE2 {_shown(ctype1)}/{_shown(ctype2)} is not a celestial "
            "TAN projection"
        )
        return None
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    used = ["CTYPE1", "CTYPE2"]
    for name in WCS_KEYWORDS[2:]:
        if name not in values:
            continue
        if name in ("CUNIT1", "CUNIT2", "RADESYS"):
            if isinstance(values[name], str) and len(values[name]) <= 8:
                header[name] = values[name].strip()
            continue
        number = _as_float(values[name])
        if number is None or abs(number) > 1e9:
            reader.notes.append(f"WCS ignored: {name} is {_shown(values[name])}")
            return None
        header[name] = number
        used.append(name)
    if not {"CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2"} <= set(used):
        reader.notes.append("WCS ignored: CRVAL1/2 or CRPIX1/2 missing")
        return None
    if not any(name in used for name in ("CD1_1", "CDELT1")):
        reader.notes.append("WCS ignored: neither CD nor CDELT matrix")
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, naxis=2)
            matrix = wcs.pixel_scale_matrix
            determinant = float(np.linalg.det(matrix))
            if not math.isfinite(determinant) or abs(determinant) < 1e-20:
                reader.notes.append("WCS ignored: its matrix is singular")
                return None
            scale = math.sqrt(abs(determinant)) * 3600.0
            if not ARCSEC_PER_PIXEL[0] <= scale <= ARCSEC_PER_PIXEL[1]:
                reader.notes.append(f"WCS ignored: a scale of {scale:.3g} arcsec/px")
                return None
            ra, dec = wcs.all_pix2world([[(width + 1) / 2.0, (height + 1) / 2.0]], 1)[0]
    except Exception as exc:  # astropy's wcslib refuses many broken headers in its own way
        reader.notes.append(f"WCS ignored: {str(exc)[:80]}")
        return None
    if not (math.isfinite(ra) and math.isfinite(dec) and -90 <= dec <= 90):
        reader.notes.append("WCS ignored: its centre is not on the sky")
        return None
    clean = wcs.to_header()
    clean["IMAGEW"], clean["IMAGEH"] = width, height
    return clean, scale, (float(ra) % 360.0, float(dec)), tuple(used)


# -- XISF ----------------------------------------------------------------------------------

# XISF properties (names from the XISF 1.0 specification's property namespaces).
XISF_FOCAL = "Instrument:Telescope:FocalLength"  # metres
XISF_PIXEL = "Instrument:Sensor:XPixelSize"  # µm
XISF_BINNING = "Instrument:Camera:XBinning"
XISF_RA = "Observation:Center:RA"  # degrees
XISF_DEC = "Observation:Center:Dec"


def from_xisf(
    keywords: Sequence[tuple[str, Any]],
    properties: dict[str, Any],
    width: int,
    height: int,
) -> HeaderHints:
    """Hints from an XISF image's FITSKeyword elements, completed by its Properties."""
    cards = list(keywords[:MAX_HEADER_CARDS])
    present = {name for name, _ in cards}
    reader = _Reader()
    focal_m = properties.get(XISF_FOCAL)
    if "FOCALLEN" not in present and focal_m is not None:
        metres = reader.number(XISF_FOCAL, focal_m, 0.001, 100.0, "focal length in metres")
        if metres is not None:
            cards.append(("FOCALLEN", metres * 1000.0))
    for prop, keyword in ((XISF_PIXEL, "XPIXSZ"), (XISF_BINNING, "XBINNING")):
        if keyword not in present and properties.get(prop) is not None:
            cards.append((keyword, properties[prop]))
    if not ({"RA", "OBJCTRA"} & present) and properties.get(XISF_RA) is not None:
        cards += [("RA", properties.get(XISF_RA)), ("DEC", properties.get(XISF_DEC))]
    hints = from_fits_cards(cards, width, height, source=SOURCE_XISF)
    renamed = {
        "FOCALLEN": XISF_FOCAL if "FOCALLEN" not in present else "FOCALLEN",
        "XPIXSZ": XISF_PIXEL if "XPIXSZ" not in present else "XPIXSZ",
        "XBINNING": XISF_BINNING if "XBINNING" not in present else "XBINNING",
        "RA": XISF_RA if not ({"RA", "OBJCTRA"} & present) else "RA",
        "DEC": XISF_DEC if not ({"RA", "OBJCTRA"} & present) else "DEC",
    }

    def named(keys: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(renamed.get(key, key) for key in keys)

    return replace(
        hints,
        scale=replace(hints.scale, keywords=named(hints.scale.keywords)) if hints.scale else None,
        position=replace(hints.position, keywords=named(hints.position.keywords))
        if hints.position
        else None,
        notes=tuple(reader.notes) + hints.notes,
    )


# -- EXIF ----------------------------------------------------------------------------------

# EXIF tag numbers (EXIF 2.3): the EXIF IFD's optics.
EXIF_FOCAL_LENGTH = 0x920A
EXIF_FOCAL_35MM = 0xA405
EXIF_FOCAL_PLANE_X_RES = 0xA20E
EXIF_FOCAL_PLANE_UNIT = 0xA210
EXIF_PIXEL_X_DIMENSION = 0xA002
# TIFF/EP (camera TIFFs) keeps the same optics in IFD0 under other numbers.
TIFF_EP_SAME_AS_EXIF = {0x920E: EXIF_FOCAL_PLANE_X_RES, 0x9210: EXIF_FOCAL_PLANE_UNIT}
EXIF_NAMES = {
    EXIF_FOCAL_LENGTH: "FocalLength",
    EXIF_FOCAL_35MM: "FocalLengthIn35mmFilm",
    EXIF_FOCAL_PLANE_X_RES: "FocalPlaneXResolution",
    EXIF_FOCAL_PLANE_UNIT: "FocalPlaneResolutionUnit",
    EXIF_PIXEL_X_DIMENSION: "PixelXDimension",
}
# FocalPlaneResolutionUnit: 2 inch, 3 cm, 4 mm, 5 µm (1: none, read as inch as EXIF says).
UNIT_MM = {1: 25.4, 2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
FULL_FRAME_WIDTH_MM = 36.0


def from_exif(tags: dict[int, Any], width: int, height: int) -> HeaderHints:
    """Scale from a camera's EXIF optics: focal length and focal-plane resolution, else the
    35 mm-equivalent focal length. EXIF has no sky position."""
    reader = _Reader()
    tags = {**{TIFF_EP_SAME_AS_EXIF.get(tag, tag): value for tag, value in tags.items()}}
    focal = reader.number(
        "FocalLength", tags.get(EXIF_FOCAL_LENGTH), *FOCAL_MM, "focal length in mm"
    )
    resolution = reader.number(
        "FocalPlaneXResolution", tags.get(EXIF_FOCAL_PLANE_X_RES), 1e-3, 1e7, "resolution"
    )
    unit = _as_float(tags.get(EXIF_FOCAL_PLANE_UNIT, 2))
    unit_mm = UNIT_MM.get(int(unit)) if unit is not None and unit.is_integer() else None
    long_side = max(width, height)
    scale: Scale | None = None
    if focal is not None and resolution is not None and unit_mm is not None:
        # The resolution is of the camera's full image; a resized copy keeps the sensor.
        recorded = _as_float(tags.get(EXIF_PIXEL_X_DIMENSION))
        recorded_width = recorded if recorded and 1 <= recorded <= 1e6 else float(width)
        sensor_width_mm = recorded_width * unit_mm / resolution
        pixel_mm = sensor_width_mm / width
        arcsec = ARCSEC_PER_RADIAN * pixel_mm / focal
        if ARCSEC_PER_PIXEL[0] <= arcsec <= ARCSEC_PER_PIXEL[1]:
            scale = Scale(
                arcsec * (1 - SCALE_TOLERANCE),
                arcsec * (1 + SCALE_TOLERANCE),
                ("FocalLength", "FocalPlaneXResolution", "FocalPlaneResolutionUnit"),
            )
        else:
            reader.notes.append(f"FocalPlaneXResolution ignored: {arcsec:.3g} arcsec/px")
    if scale is None and EXIF_FOCAL_35MM in tags:
        equivalent = reader.number(
            "FocalLengthIn35mmFilm", tags.get(EXIF_FOCAL_35MM), *FOCAL_MM, "focal length in mm"
        )
        if equivalent is not None:
            field_deg = math.degrees(2 * math.atan(FULL_FRAME_WIDTH_MM / 2 / equivalent))
            arcsec = field_deg * 3600.0 / long_side
            scale = Scale(
                arcsec * (1 - EQUIVALENT_FOCAL_TOLERANCE),
                arcsec * (1 + EQUIVALENT_FOCAL_TOLERANCE),
                ("FocalLengthIn35mmFilm",),
            )
    return HeaderHints(source=SOURCE_EXIF, scale=scale, notes=tuple(reader.notes))


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


def read_prepared(prepared: PreparedInput) -> tuple[HeaderHints | None, list[str]]:
    """The hints in a prepared upload's header, and a note when it cannot be read: a
    hostile header never fails the solve."""
    try:
        return read_header(prepared.header_source, prepared.width, prepared.height), []
    except Exception as exc:
        log.warning("reading the header's hints failed: %s", exc)
        return None, [f"The header could not be read: {str(exc)[:200]}"]


def read_header(source: HeaderSource, width: int, height: int) -> HeaderHints | None:
    """The hints in the header of an input as it was uploaded (before any conversion), or
    None when its kind carries none. Reads only the header, never the pixels."""
    if source.kind == "fits":
        with fits.open(source.path, memmap=True, lazy_load_hdus=True) as hdus:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cards = cards_from_header(hdus[source.fits_extension].header)
        return from_fits_cards(cards, width, height)
    if source.kind == "xisf":
        keywords, properties = read_xisf_header(source.path)
        return from_xisf(keywords, properties, width, height)
    if source.kind in ("jpeg", "tiff", "png"):
        from PIL import Image as PILImage

        with PILImage.open(source.path) as image:
            exif = image.getexif()
            tags: dict[int, Any] = dict(list(exif.items())[:MAX_HEADER_CARDS])
            tags.update(list(exif.get_ifd(EXIF_IFD).items())[:MAX_HEADER_CARDS])
        return from_exif(tags, width, height) if tags else None
    return None


EXIF_IFD = 0x8769


def read_xisf_header(path: Path) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """The first image's FITSKeyword (name, value) pairs and Property values of an XISF
    file, from its XML header (bounded to MAX_XISF_HEADER_BYTES)."""
    from xisf import XISF

    check_xisf_header_size(path, MAX_XISF_HEADER_BYTES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = XISF(str(path)).get_images_metadata()
    if not images:
        return [], {}
    image = images[0]
    keywords = [
        (str(name).upper(), entries[0].get("value"))
        for name, entries in list(image.get("FITSKeywords", {}).items())[:MAX_HEADER_CARDS]
        if entries
    ]
    properties = {
        str(name): entry.get("value")
        for name, entry in list(image.get("XISFProperties", {}).items())[:MAX_HEADER_CARDS]
        if isinstance(entry, dict)
    }
    return keywords, properties
