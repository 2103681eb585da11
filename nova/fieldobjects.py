"""What a solved field shows: constellations, named bright stars and NGC/IC objects.

``plot-constellations -L`` (what nova runs) places catalogue objects with the SIP inverse
polynomial, which far outside the fitted field can fold an object 77 degrees away back into
the picture ("39 Cyg" on a Big Dipper photo). NGC/IC objects it checks against the plain TAN
projection; constellations and bright stars it does not. So Nova takes constellations and
bright stars from the engine's own catalogues (compiled into libastrometry: names, positions
and V magnitudes) and keeps an object only when its sky position is within the field's
radius of the centre and the full WCS (astropy's inversion of the forward SIP solution)
puts it inside the image. NGC/IC objects still come from ``plot-constellations``.

The listing keeps nova's lines and order: constellations having at least two of their
stars in the field ("The constellation ..." when all are), the ten brightest named stars,
then NGC/IC objects.
"""

from __future__ import annotations

import ctypes
import functools
import json
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from .calibration import compute_calibration

ENGINE_LIBRARY = "libastrometry.so.0"
BRIGHTEST_LISTED = 10  # plot-constellations -b 10, as nova lists them


class _EngineBrightStar(ctypes.Structure):
    # libastrometry's brightstar_t (include/astrometry/brightstars.h).
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("common_name", ctypes.c_char_p),
        ("ra", ctypes.c_double),
        ("dec", ctypes.c_double),
        ("vmag", ctypes.c_double),
    ]


@dataclass(frozen=True)
class BrightStar:
    name: str  # Bayer and Flamsteed designations, e.g. "ζ UMa / 79 UMa"
    common_name: str  # e.g. "Mizar"; "" when it has none
    ra: float
    dec: float
    vmag: float

    @property
    def names(self) -> list[str]:
        return [self.common_name, self.name] if self.common_name else [self.name]

    @property
    def listed(self) -> str:
        if self.common_name:
            return f"The star {self.common_name} ({self.name})"
        return f"The star {self.name}"


@dataclass(frozen=True)
class Constellation:
    short_name: str
    long_name: str
    stars: tuple[tuple[float, float], ...]  # (RA, Dec) of the stars its lines join


@dataclass(frozen=True)
class EngineCatalogue:
    stars: tuple[BrightStar, ...]
    constellations: tuple[Constellation, ...]


@functools.cache
def engine_catalogue() -> EngineCatalogue:
    """The bright-star and constellation tables compiled into the engine's library."""
    lib = ctypes.CDLL(ENGINE_LIBRARY)
    lib.bright_stars_get.restype = ctypes.POINTER(_EngineBrightStar)
    lib.bright_stars_get.argtypes = [ctypes.c_int]
    stars = []
    for number in range(lib.bright_stars_n()):
        entry = lib.bright_stars_get(number).contents
        name = (entry.name or b"").decode()
        common = (entry.common_name or b"").decode()
        # plot-constellations skips nameless entries, and Maia (a Pleiad drawn with M 45).
        if name and common != "Maia":
            stars.append(BrightStar(name, common, entry.ra, entry.dec, entry.vmag))
    for function in ("constellations_get_shortname", "constellations_get_longname"):
        getattr(lib, function).restype = ctypes.c_char_p
    constellations = []
    for number in range(lib.constellations_n()):
        unique: dict[int, tuple[float, float]] = {}
        for line in range(lib.constellations_get_nlines(number)):
            ends = ctypes.c_int(), ctypes.c_int()
            lib.constellations_get_line(number, line, ctypes.byref(ends[0]), ctypes.byref(ends[1]))
            for end in ends:
                ra, dec = ctypes.c_double(), ctypes.c_double()
                lib.constellations_get_star_radec(end.value, ctypes.byref(ra), ctypes.byref(dec))
                unique.setdefault(end.value, (ra.value, dec.value))
        constellations.append(
            Constellation(
                lib.constellations_get_shortname(number).decode(),
                lib.constellations_get_longname(number).decode(),
                tuple(unique.values()),
            )
        )
    return EngineCatalogue(tuple(stars), tuple(constellations))


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


class Field:
    """A solved field: its WCS, image size, centre and radius (nova's calibration)."""

    def __init__(self, header: fits.Header) -> None:
        self.width = int(header["IMAGEW"])
        self.height = int(header["IMAGEH"])
        numbers = compute_calibration(header, self.width, self.height, y_axis_down=False)
        self.ra, self.dec, self.radius = numbers.ra, numbers.dec, numbers.radius
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            self.wcs = WCS(header, relax=True, naxis=2)

    def pixels(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """(N, 2) FITS 1-based pixel positions of the objects in the field; NaN for the rest:
        farther than the radius from the centre, or placed outside the image."""
        ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
        result = np.full((len(ra), 2), np.nan)
        centre = _unit_vectors(np.array(self.ra), np.array(self.dec))
        near = _unit_vectors(ra, dec) @ centre >= np.cos(np.radians(self.radius))
        if not near.any():
            return result
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xy = self.wcs.all_world2pix(np.column_stack([ra[near], dec[near]]), 1, quiet=True)
        inside = (
            np.isfinite(xy).all(axis=1)
            & (xy[:, 0] >= 0)
            & (xy[:, 0] <= self.width)
            & (xy[:, 1] >= 0)
            & (xy[:, 1] <= self.height)
        )
        xy[~inside] = np.nan
        result[near] = xy
        return result


@dataclass(frozen=True)
class FieldObjects:
    listed: list[str]  # nova's -L lines
    annotations: list[dict]  # what /api/jobs/N/annotations serves, stars with "vmag"


def constellations_in(field: Field, catalogue: EngineCatalogue) -> list[str]:
    lines = []
    for constellation in catalogue.constellations:
        ra, dec = np.array(constellation.stars).T
        inside = int(np.isfinite(field.pixels(ra, dec)[:, 0]).sum())
        if inside < 2:
            continue
        kind = (
            "The constellation"
            if inside == len(constellation.stars)
            else "Part of the constellation"
        )
        lines.append(f"{kind} {constellation.long_name} ({constellation.short_name})")
    return lines


def stars_in(field: Field, catalogue: EngineCatalogue) -> list[tuple[BrightStar, float, float]]:
    """Every named bright star in the field with its pixel position, in catalogue order."""
    stars = catalogue.stars
    xy = field.pixels(np.array([s.ra for s in stars]), np.array([s.dec for s in stars]))
    return [
        (star, float(x), float(y)) for star, (x, y) in zip(stars, xy, strict=True) if np.isfinite(x)
    ]


def _plot_constellations_ngc(work_dir: Path, wcs_name: str) -> tuple[list[str], list[dict]]:
    """NGC/IC lines and annotations from plot-constellations (with its TAN fold check)."""
    command = ["plot-constellations", "-w", wcs_name, "-N", "-L", "-J"]
    done = subprocess.run(
        command, cwd=work_dir, capture_output=True, text=True, timeout=60, check=True
    )
    try:
        text = done.stderr
        annotations = json.loads(text[text.index("{") : text.rindex("}") + 1])["annotations"]
    except (ValueError, KeyError):
        annotations = []
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return lines, [a for a in annotations if a.get("type") != "star"]


def field_objects(work_dir: Path, wcs_name: str) -> FieldObjects:
    with fits.open(work_dir / wcs_name) as hdus:
        field = Field(hdus[0].header)
    catalogue = engine_catalogue()
    stars = stars_in(field, catalogue)
    listed_stars = stars
    if len(stars) > BRIGHTEST_LISTED:  # plot-constellations sorts only when it truncates
        listed_stars = sorted(stars, key=lambda item: item[0].vmag)[:BRIGHTEST_LISTED]
    ngc_lines, ngc_annotations = _plot_constellations_ngc(work_dir, wcs_name)
    listed = (
        constellations_in(field, catalogue)
        + [star.listed for star, _, _ in listed_stars]
        + ngc_lines
    )
    star_annotations = [
        {
            "type": "star",
            "pixelx": x,
            "pixely": y,
            "name": star.names[0],
            "names": star.names,
            "vmag": star.vmag,
        }
        for star, x, y in stars
    ]
    return FieldObjects(listed, ngc_annotations + star_annotations)


def split_names(line: str) -> list[str]:
    """A listed line's names: split on "/" outside parentheses only, so that
    "The star Alioth (ε UMa / 77 UMa)" stays whole (nova splits it in two)."""
    names, depth, start = [], 0, 0
    for position, char in enumerate(line):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "/" and depth == 0:
            names.append(line[start:position])
            start = position + 1
    names.append(line[start:])
    return [name.strip() for name in names if name.strip()]
