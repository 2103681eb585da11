"""Hints from what a file says about itself: FITS cards, XISF FITSKeyword and Property
elements, EXIF tags. Each reader is a pure function over a bounded header (a list of
keyword/value pairs, at most ``MAX_HEADER_CARDS``): every value is checked and anything
hostile or broken (NaN, text, 1e308, a negative focal length, RA 400, a WCS with a singular
matrix) is left out with a note, never an exception.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from nova.engine.header_values import ValueReader, as_float, parse_sexagesimal, shown
from nova.engine.hints import (
    MAX_HEADER_CARDS,
    MEASURED_SCALE_TOLERANCE,
    SOURCE_EXIF,
    SOURCE_FITS,
    SOURCE_XISF,
    HeaderHints,
    Position,
    Scale,
)

ARCSEC_PER_RADIAN = 206264.806


# Scale from pixel size and focal length: the optics are known to a few per cent (focal
# reducers, focusing), so the engine searches +-10 % around every reading.
SCALE_TOLERANCE = 0.10


# 35 mm-equivalent focal lengths are rounded and defined on the diagonal by some makers.
EQUIVALENT_FOCAL_TOLERANCE = 0.15


# Plausible ranges: anything outside is a broken header, not optics.
FOCAL_MM = (1.0, 100_000.0)


PIXEL_UM = (0.5, 100.0)


BINNING = (1, 16)


ARCSEC_PER_PIXEL = (0.01, 3600.0)


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
    reader = ValueReader()
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


def _fits_scale(values: dict[str, Any], reader: ValueReader) -> Scale | None:
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


def _fits_position(values: dict[str, Any], reader: ValueReader) -> Position | None:
    for ra_name, dec_name in (("RA", "DEC"), ("OBJCTRA", "OBJCTDEC"), ("RA_OBJ", "DEC_OBJ")):
        if ra_name not in values and dec_name not in values:
            continue
        raw_ra, raw_dec = values.get(ra_name), values.get(dec_name)
        if raw_ra is None or raw_dec is None:
            reader.notes.append(f"{ra_name}/{dec_name} ignored: only one of them is given")
            continue
        ra = as_float(raw_ra) if ra_name != "OBJCTRA" else None
        if ra is None:
            hours = parse_sexagesimal(raw_ra) if isinstance(raw_ra, str) else None
            ra = None if hours is None else hours * 15.0  # sexagesimal RA is in hours
        dec = as_float(raw_dec) if dec_name != "OBJCTDEC" else None
        if dec is None:
            dec = parse_sexagesimal(raw_dec) if isinstance(raw_dec, str) else None
        if ra is None or not 0.0 <= ra <= 360.0:
            reader.notes.append(f"{ra_name} ignored: {shown(raw_ra)} is not a right ascension")
            continue
        if dec is None or not -90.0 <= dec <= 90.0:
            reader.notes.append(f"{dec_name} ignored: {shown(raw_dec)} is not a declination")
            continue
        return Position(ra % 360.0, dec, (ra_name, dec_name))
    return None


WCS_KEYWORDS = (
    "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1",
    "CD2_2", "CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CROTA2", "CUNIT1",
    "CUNIT2", "EQUINOX", "RADESYS", "LONPOLE", "LATPOLE",
)  # fmt: skip


def _linear_tan_header(
    values: dict[str, Any], reader: ValueReader
) -> tuple[fits.Header, list[str]] | None:
    """The header's TAN WCS keywords as a header of finite numbers and the names used; None
    (with a note when there was a WCS) when it is not a complete celestial TAN projection."""
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
            f"WCS ignored: CTYPE1/CTYPE2 {shown(ctype1)}/{shown(ctype2)} is not a celestial "
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
        number = as_float(values[name])
        if number is None or abs(number) > 1e9:
            reader.notes.append(f"WCS ignored: {name} is {shown(values[name])}")
            return None
        header[name] = number
        used.append(name)
    if not {"CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2"} <= set(used):
        reader.notes.append("WCS ignored: CRVAL1/2 or CRPIX1/2 missing")
        return None
    if not any(name in used for name in ("CD1_1", "CDELT1")):
        reader.notes.append("WCS ignored: neither CD nor CDELT matrix")
        return None
    return header, used


def _checked_wcs(
    values: dict[str, Any], width: int, height: int, reader: ValueReader
) -> tuple[fits.Header, float, tuple[float, float], tuple[str, ...]] | None:
    """The header's celestial TAN WCS, when it is one that can be verified: celestial axes,
    finite numbers, an invertible matrix and a plausible scale. SIP terms are left out (the
    engine fits its own); only the linear part is verified."""
    linear = _linear_tan_header(values, reader)
    if linear is None:
        return None
    header, used = linear
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
    reader = ValueReader()
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
    reader = ValueReader()
    tags = {**{TIFF_EP_SAME_AS_EXIF.get(tag, tag): value for tag, value in tags.items()}}
    focal = reader.number(
        "FocalLength", tags.get(EXIF_FOCAL_LENGTH), *FOCAL_MM, "focal length in mm"
    )
    resolution = reader.number(
        "FocalPlaneXResolution", tags.get(EXIF_FOCAL_PLANE_X_RES), 1e-3, 1e7, "resolution"
    )
    unit = as_float(tags.get(EXIF_FOCAL_PLANE_UNIT, 2))
    unit_mm = UNIT_MM.get(int(unit)) if unit is not None and unit.is_integer() else None
    long_side = max(width, height)
    scale: Scale | None = None
    if focal is not None and resolution is not None and unit_mm is not None:
        # The resolution is of the camera's full image; a resized copy keeps the sensor.
        recorded = as_float(tags.get(EXIF_PIXEL_X_DIMENSION))
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
