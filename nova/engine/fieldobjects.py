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
then NGC/IC objects. The annotated picture (``pictures.write_annotated``) draws exactly what
is listed, from the same ``FieldObjects``: its ``marks`` (one per listed object, where it
lies) and ``constellation_lines``.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import subprocess
import warnings
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from nova.engine.calibration import compute_calibration

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
    def label(self) -> str:
        """What a picture writes beside it: its first common name ("Dubhe" of "Dubhe /
        Dubb / Ak / Dubh"), else its first designation ("κ Dra" of "κ Dra / 5 Dra")."""
        return self.names[0].split(" / ")[0]

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
    lines: tuple[tuple[int, int], ...] = ()  # pairs of indices into ``stars``


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
        lines = []
        for line in range(lib.constellations_get_nlines(number)):
            ends = ctypes.c_int(), ctypes.c_int()
            lib.constellations_get_line(number, line, ctypes.byref(ends[0]), ctypes.byref(ends[1]))
            for end in ends:
                ra, dec = ctypes.c_double(), ctypes.c_double()
                lib.constellations_get_star_radec(end.value, ctypes.byref(ra), ctypes.byref(dec))
                unique.setdefault(end.value, (ra.value, dec.value))
            order = list(unique)
            lines.append((order.index(ends[0].value), order.index(ends[1].value)))
        constellations.append(
            Constellation(
                lib.constellations_get_shortname(number).decode(),
                lib.constellations_get_longname(number).decode(),
                tuple(unique.values()),
                tuple(lines),
            )
        )
    return EngineCatalogue(tuple(stars), tuple(constellations))


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


# Constellation lines are followed to this many field radii from the centre (past the
# image's corners, so that a line leaving the picture is drawn to its edge) and no farther:
# beyond, the SIP polynomials were never fitted and may fold far stars into the picture.
LINE_REACH = 1.15
LINE_STEPS_PER_RADIUS = 40  # points per field radius along a line (smooth at the edges)
# A point whose full-WCS position strays this far (in image diagonals) from its plain TAN
# position has been folded by the SIP polynomials: it is not drawn.
FOLD_TOLERANCE = 0.25


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

    def _project_near(self, ra: np.ndarray, dec: np.ndarray, reach: float) -> np.ndarray:
        """(N, 2) FITS 1-based pixel positions (full WCS) of the points within ``reach``
        field radii of the centre; NaN for the rest."""
        ra, dec = np.asarray(ra, dtype=float), np.asarray(dec, dtype=float)
        result = np.full((len(ra), 2), np.nan)
        centre = _unit_vectors(np.array(self.ra), np.array(self.dec))
        near = _unit_vectors(ra, dec) @ centre >= np.cos(
            np.radians(min(180.0, reach * self.radius))
        )
        if not near.any():
            return result
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result[near] = self.wcs.all_world2pix(
                np.column_stack([ra[near], dec[near]]), 1, quiet=True
            )
        return result

    def pixels(self, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        """(N, 2) FITS 1-based pixel positions of the objects in the field; NaN for the rest:
        farther than the radius from the centre, or placed outside the image."""
        xy = self._project_near(ra, dec, 1.0)
        with np.errstate(invalid="ignore"):
            inside = (
                np.isfinite(xy).all(axis=1)
                & (xy[:, 0] >= 0)
                & (xy[:, 0] <= self.width)
                & (xy[:, 1] >= 0)
                & (xy[:, 1] <= self.height)
            )
        xy[~inside] = np.nan
        return xy

    def track(self, start: tuple[float, float], end: tuple[float, float]) -> np.ndarray:
        """(N, 2) FITS 1-based pixel positions along the great circle from ``start`` to
        ``end`` (RA, Dec): NaN where it is beyond LINE_REACH radii or folded by the SIP
        polynomials. Points may lie outside the image, so a drawn line reaches its edge."""
        a, b = (
            _unit_vectors(np.array(start[0]), np.array(start[1])),
            _unit_vectors(np.array(end[0]), np.array(end[1])),
        )
        angle = float(np.degrees(np.arccos(np.clip(a @ b, -1, 1))))
        steps = max(2, min(2000, math.ceil(angle / self.radius * LINE_STEPS_PER_RADIUS) + 1))
        fractions = np.linspace(0, 1, steps)[:, None]
        points = a * (1 - fractions) + b * fractions  # on the chord; normalised below
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        ra = np.degrees(np.arctan2(points[:, 1], points[:, 0])) % 360
        dec = np.degrees(np.arcsin(np.clip(points[:, 2], -1, 1)))
        xy = self._project_near(ra, dec, LINE_REACH)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tan = np.column_stack(self.wcs.wcs_world2pix(ra, dec, 1))
        with np.errstate(invalid="ignore"):
            folded = np.hypot(*(xy - tan).T) > FOLD_TOLERANCE * math.hypot(self.width, self.height)
        xy[folded | ~np.isfinite(tan).all(axis=1)] = np.nan
        return xy


@dataclass(frozen=True)
class Mark:
    """One listed object where it lies in the field: what the annotated picture labels."""

    kind: str  # "constellation", "star" or "ngc"
    label: str  # the text drawn
    line: str  # its line in the listing ("The star Merak / Mirak (β UMa / 48 UMa)")
    x: float  # FITS 1-based engine pixel coordinates
    y: float
    radius: float = 0.0  # NGC/IC objects: their size in pixels

    @property
    def listed(self) -> str:
        """The name objects_in_field gives it: its line's first ("The star Merak")."""
        return split_names(self.line)[0]


@dataclass(frozen=True)
class FieldObjects:
    listed: list[str]  # nova's -L lines
    annotations: list[dict]  # what /api/jobs/N/annotations serves, stars with "vmag"
    marks: list[Mark] = dataclass_field(default_factory=list)  # one per listed object
    # Constellation lines as polylines of FITS 1-based engine pixels (NaN: not drawn there).
    constellation_lines: list[np.ndarray] = dataclass_field(default_factory=list)


def constellations_in(
    field: Field, catalogue: EngineCatalogue
) -> list[tuple[str, Constellation, np.ndarray]]:
    """The listed line, the constellation and the pixels of its stars in the field, for
    every constellation with at least two of its stars in the field."""
    found = []
    for constellation in catalogue.constellations:
        ra, dec = np.array(constellation.stars).T
        xy = field.pixels(ra, dec)
        xy = xy[np.isfinite(xy[:, 0])]
        if len(xy) < 2:
            continue
        kind = (
            "The constellation"
            if len(xy) == len(constellation.stars)
            else "Part of the constellation"
        )
        line = f"{kind} {constellation.long_name} ({constellation.short_name})"
        found.append((line, constellation, xy))
    return found


def constellation_lines_in(field: Field, catalogue: EngineCatalogue) -> list[np.ndarray]:
    """Every constellation line that crosses the image, as a polyline of engine pixels."""
    lines = []
    for constellation in catalogue.constellations:
        for first, second in constellation.lines:
            xy = field.track(constellation.stars[first], constellation.stars[second])
            with np.errstate(invalid="ignore"):
                inside = (
                    (xy[:, 0] >= 0)
                    & (xy[:, 0] <= field.width)
                    & (xy[:, 1] >= 0)
                    & (xy[:, 1] <= field.height)
                )
            if inside.any():
                lines.append(xy)
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
    constellations = constellations_in(field, catalogue)
    ngc_lines, ngc_annotations = _plot_constellations_ngc(work_dir, wcs_name)
    listed = (
        [line for line, _, _ in constellations]
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
    marks = [
        # The constellation's name amid its stars in the field, as plot-constellations puts it.
        Mark("constellation", constellation.long_name, line, *map(float, xy.mean(axis=0)))
        for line, constellation, xy in constellations
    ]
    marks += [Mark("star", star.label, star.listed, x, y) for star, x, y in listed_stars]
    marks += [
        Mark(
            "ngc",
            " / ".join(str(name) for name in annotation["names"][:2]),
            " / ".join(str(name) for name in annotation["names"]),  # as -L lists it
            float(annotation["pixelx"]),
            float(annotation["pixely"]),
            float(annotation.get("radius", 0.0)),
        )
        for annotation in ngc_annotations
        if annotation.get("names")
    ]
    return FieldObjects(
        listed, ngc_annotations + star_annotations, marks, constellation_lines_in(field, catalogue)
    )


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
