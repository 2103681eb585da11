"""Calibration numbers from a WCS header, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
from astropy.io import fits

from nova.engine.calibration import compute_calibration, format_dec_dms, format_ra_hms, format_size


def tan_header(
    cd: list[list[float]],
    crval: tuple[float, float] = (150.0, 30.0),
    crpix: tuple[float, float] = (50.5, 40.5),
) -> fits.Header:
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = crval
    header["CRPIX1"], header["CRPIX2"] = crpix
    header["CD1_1"], header["CD1_2"] = cd[0]
    header["CD2_1"], header["CD2_2"] = cd[1]
    return header


def test_north_up_east_left_image() -> None:
    scale = 1.0 / 3600  # 1 arcsec per pixel
    numbers = compute_calibration(tan_header([[-scale, 0], [0, scale]]), 100, 80, y_axis_down=False)
    assert numbers.pixscale == pytest.approx(1.0)
    assert numbers.parity == -1.0  # det CD < 0: the usual sky orientation
    assert abs(numbers.orientation) < 1e-9  # up is north
    # CRPIX is the centre pixel (0.5 + W/2, 0.5 + H/2), so the centre is CRVAL.
    assert (numbers.ra, numbers.dec) == (pytest.approx(150.0), pytest.approx(30.0))
    assert numbers.width_arcsec == pytest.approx(100.0)
    assert numbers.height_arcsec == pytest.approx(80.0)
    assert numbers.radius == pytest.approx(math.hypot(100, 80) / 2 / 3600)
    assert numbers.x**2 + numbers.y**2 + numbers.z**2 == pytest.approx(1.0)
    assert numbers.z == pytest.approx(0.5)


def test_rotation_parity_and_raster_flip() -> None:
    scale = 2.0 / 3600
    angle = math.radians(30)
    cd = [
        [scale * math.cos(angle), -scale * math.sin(angle)],
        [scale * math.sin(angle), scale * math.cos(angle)],
    ]
    fits_numbers = compute_calibration(tan_header(cd), 100, 80, y_axis_down=False)
    assert fits_numbers.parity == 1.0
    assert fits_numbers.pixscale == pytest.approx(2.0)
    # nova: T = p cd11 + cd22, A = p cd21 - cd12, orient = -atan2(A, T) = -60 degrees here.
    t = cd[0][0] + cd[1][1]
    a = cd[1][0] - cd[0][1]
    assert fits_numbers.orientation == pytest.approx(-math.degrees(math.atan2(a, t)))
    raster = compute_calibration(tan_header(cd), 100, 80, y_axis_down=True)
    assert raster.orientation == pytest.approx((fits_numbers.orientation + 180) % 360)
    assert raster.parity == fits_numbers.parity


def test_centre_off_the_reference_pixel_and_ra_wraps() -> None:
    scale = 1.0 / 3600
    header = tan_header([[-scale, 0], [0, scale]], crval=(0.0, 0.0), crpix=(1.0, 1.0))
    numbers = compute_calibration(header, 3601, 1, y_axis_down=False)
    # Centre is 1800 px = 0.5 degree east (RA decreases along x with CD1_1 < 0): RA wraps.
    assert numbers.ra == pytest.approx(359.5, abs=1e-3)
    assert 0 <= numbers.ra < 360


def test_formats() -> None:
    assert format_ra_hms(187.185) == "12h 28m 44.40s"
    assert format_dec_dms(56.713) == "+56° 42′ 46.8″"
    assert format_dec_dms(-2.756) == "-02° 45′ 21.6″"
    assert format_ra_hms(359.99999999) == "00h 00m 00.00s"
    assert format_size(121472, 85655) == "33.7 x 23.8 degrees"
    assert format_size(5422, 3563) == "90.4 x 59.4 arcminutes"
    assert format_size(50, 40) == "50 x 40 arcseconds"
