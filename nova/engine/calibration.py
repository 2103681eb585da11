"""The numbers nova derives from a solved WCS (nova-service.md section 3.6)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning


@dataclass(frozen=True)
class CalibrationNumbers:
    ra: float
    dec: float
    radius: float  # degrees, centre to corner
    pixscale: float  # arcsec per pixel
    orientation: float  # degrees: "up is <orientation> degrees E of N"
    parity: float  # +1.0 or -1.0, the sign of det CD
    width_arcsec: float
    height_arcsec: float
    x: float
    y: float
    z: float
    dec_min: float
    dec_max: float


# nova's fields of /api/jobs/N/calibration, in its order; the status of a submission
# (job_calibrations) and nova's web pages leave out the two sizes.
CALIBRATION_FIELDS = (
    "ra",
    "dec",
    "width_arcsec",
    "height_arcsec",
    "radius",
    "pixscale",
    "orientation",
    "parity",
)


def nova_calibration(numbers: object, *, with_size: bool = True) -> dict[str, float]:
    """nova's calibration fields of ``numbers`` (CalibrationNumbers or a Calibration row)."""
    return {
        name: float(getattr(numbers, name))
        for name in CALIBRATION_FIELDS
        if with_size or not name.endswith("_arcsec")
    }


def cd_matrix(header: fits.Header) -> np.ndarray:
    if "CD1_1" in header:
        return np.array(
            [
                [header["CD1_1"], header.get("CD1_2", 0.0)],
                [header.get("CD2_1", 0.0), header["CD2_2"]],
            ]
        )
    # Fall back to CDELT/PC for headers not written by the engine.
    cdelt = np.array([header["CDELT1"], header["CDELT2"]])
    pc = np.array(
        [
            [header.get("PC1_1", 1.0), header.get("PC1_2", 0.0)],
            [header.get("PC2_1", 0.0), header.get("PC2_2", 1.0)],
        ]
    )
    return pc * cdelt[:, None]


def compute_calibration(
    header: fits.Header, width: int, height: int, *, y_axis_down: bool
) -> CalibrationNumbers:
    """Compute nova's calibration numbers from a solved WCS ``header``.

    ``width``/``height`` are the image's pixel size. The orientation ("up is N degrees E of
    N") is nova's formula on the CD matrix. Raster images (JPEG, PNG, ...) store their top
    row first, so the engine's +y points down the picture as displayed and "up" is 180
    degrees away: nova reports (180 - orient) there, which mirrors the angle (its issue
    #151, "orientation may be incorrect"); the rotation (orient + 180) is what a viewer sees.
    """
    cd = cd_matrix(header)
    det = float(np.linalg.det(cd))
    pixscale = 3600.0 * math.sqrt(abs(det))
    parity = 1.0 if det >= 0 else -1.0
    t = parity * cd[0, 0] + cd[1, 1]
    a = parity * cd[1, 0] - cd[0, 1]
    orientation = -math.degrees(math.atan2(a, t))
    if y_axis_down:
        orientation = (orientation + 180.0) % 360.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, relax=True)
    # nova evaluates the centre with the TAN part only; with a SIP solution that misplaces
    # the centre of wide fields (0.2 degrees on a 33-degree field), so the full solution is
    # used here. Pixel (0.5 + W/2, 0.5 + H/2) in FITS 1-based coordinates is the centre.
    centre = [[0.5 + 0.5 * width, 0.5 + 0.5 * height]]
    ra, dec = (float(v) for v in wcs.all_pix2world(centre, 1)[0])
    ra %= 360.0
    radius = pixscale * math.hypot(width, height) / 2.0 / 3600.0
    ra_rad, dec_rad = math.radians(ra), math.radians(dec)
    return CalibrationNumbers(
        ra=ra,
        dec=dec,
        radius=radius,
        pixscale=pixscale,
        orientation=orientation,
        parity=parity,
        width_arcsec=pixscale * width,
        height_arcsec=pixscale * height,
        x=math.cos(dec_rad) * math.cos(ra_rad),
        y=math.cos(dec_rad) * math.sin(ra_rad),
        z=math.sin(dec_rad),
        dec_min=max(-90.0, dec - radius),
        dec_max=min(90.0, dec + radius),
    )


def read_wcs_header(path: Path) -> fits.Header:
    with fits.open(path) as hdus:
        return hdus[0].header.copy()


def _sexagesimal(value: float, rounds_up_at: float) -> tuple[int, int, float]:
    """Whole units, minutes and seconds of a non-negative ``value``; seconds that would be
    shown rounded to 60 (``rounds_up_at`` and more) carry into the minutes, and those into
    the units (the caller wraps hours at 24)."""
    whole = int(value)
    minutes = (value - whole) * 60
    m = int(minutes)
    s = (minutes - m) * 60
    if s >= rounds_up_at:
        s, m = 0.0, m + 1
    if m >= 60:
        m, whole = 0, whole + 1
    return whole, m, s


def format_ra_hms(ra: float) -> str:
    h, m, s = _sexagesimal((ra % 360.0) / 15.0, 59.995)
    return f"{h % 24:02d}h {m:02d}m {s:05.2f}s"


def format_dec_dms(dec: float) -> str:
    sign = "-" if dec < 0 else "+"
    d, m, s = _sexagesimal(abs(dec), 59.95)
    return f"{sign}{d:02d}° {m:02d}′ {s:04.1f}″"


def format_size(width_arcsec: float, height_arcsec: float) -> str:
    """Field size in the unit nova picks: arcsec, arcmin (> 60″) or degrees (> 3600″)."""
    smaller = min(width_arcsec, height_arcsec)
    if smaller > 3600:
        return f"{width_arcsec / 3600:.3g} x {height_arcsec / 3600:.3g} degrees"
    if smaller > 60:
        return f"{width_arcsec / 60:.3g} x {height_arcsec / 60:.3g} arcminutes"
    return f"{width_arcsec:.3g} x {height_arcsec:.3g} arcseconds"
