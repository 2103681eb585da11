"""The engine's index files: what is installed, and which field widths they can solve.

Only FITS headers are read (a few KB per file), so scanning hundreds of megabytes of index
files takes milliseconds. Every astrometry.net index file starts with a primary header
naming its ``INDEXID``, the range of quad diameters it holds (``SCALE_L``/``SCALE_U``, in
radians), its star and quad counts, and whether it covers the whole sky (``ALLSKY``) or one
healpix tile (``HEALPIX`` of ``HPNSIDE``).

The engine tries an index on a field when the index's quad diameters can occur in it: by
default it looks for quads from 10 % to 100 % of the image size. A field ``W`` degrees wide
is therefore covered by the indexes whose quad range overlaps ``0.1 W .. W``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astropy.io import fits

GLOB = "index-*.fits"
# Field widths (degrees) the coverage table reports, from a long-focus telescope to a fisheye.
DEFAULT_WIDTHS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 90.0)
# The engine's default quad size range, as fractions of the image size.
QUAD_MIN_FRACTION = 0.1
QUAD_MAX_FRACTION = 1.0
# The engine never considers fields wider than this without a scale hint (its maxwidth).
MAX_FIELD_DEG = 180.0
# Debian's index-tycho2-07 has the smallest quads of the packaged files: 22 arcmin.
TYCHO2_SMALLEST_FIELD = 22.0 / 60.0
SMALL_QUAD_INDEXES = (
    "index files with smaller quads: the 4200 series (2MASS) or the 5200 series "
    "(Tycho-2 + Gaia) from https://data.astrometry.net/ have quads down to 2 arcmin, for "
    "fields of a few arcminutes. Put them in a directory and add it to NOVA_INDEX_DIRS."
)

_UNIT_TO_ARCMIN = {
    "radian": 180.0 / math.pi * 60.0,
    "rad": 180.0 / math.pi * 60.0,
    "deg": 60.0,
    "arcmin": 1.0,
    "arcsec": 1.0 / 60.0,
}


@dataclass(frozen=True)
class IndexFile:
    path: Path
    index_id: int
    scale_lower: float  # smallest quad diameter, arcmin
    scale_upper: float  # largest quad diameter, arcmin
    size: int  # bytes
    stars: int | None = None
    quads: int | None = None
    healpix: int | None = None  # None: the whole sky
    nside: int | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def all_sky(self) -> bool:
        return self.healpix is None

    @property
    def sky(self) -> str:
        return "all sky" if self.all_sky else f"healpix {self.healpix} of nside {self.nside}"

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "index_id": self.index_id,
            "scale_lower_arcmin": self.scale_lower,
            "scale_upper_arcmin": self.scale_upper,
            "stars": self.stars,
            "quads": self.quads,
            "healpix": self.healpix,
            "nside": self.nside,
            "all_sky": self.all_sky,
            "size": self.size,
        }


@dataclass(frozen=True)
class IndexProblem:
    """A configured directory that is missing or empty, or a file that cannot be used."""

    path: Path
    kind: str  # "missing", "not a directory", "empty", "unreadable"
    message: str

    def as_json(self) -> dict[str, str]:
        return {"path": str(self.path), "kind": self.kind, "message": self.message}


class IndexScan(list[IndexFile]):
    """The index files found (a list, smallest quads first) and the problems met finding them."""

    def __init__(self, files: Iterable[IndexFile] = (), problems: Iterable[IndexProblem] = ()):
        super().__init__(files)
        self.problems: list[IndexProblem] = list(problems)


@dataclass(frozen=True)
class CoverageBand:
    """Whether fields ``width`` degrees wide can be solved, and by which index files."""

    width: float  # degrees
    quad_lower: float  # quad diameters (arcmin) the engine looks for in such a field
    quad_upper: float
    indexes: tuple[IndexFile, ...] = field(default=())
    full_sky: bool = False  # False: only some healpix tiles of the sky are covered

    @property
    def covered(self) -> bool:
        return bool(self.indexes)

    @property
    def index_ids(self) -> list[int]:
        return sorted({index.index_id for index in self.indexes})

    def as_json(self) -> dict[str, Any]:
        return {
            "width_deg": self.width,
            "quad_lower_arcmin": self.quad_lower,
            "quad_upper_arcmin": self.quad_upper,
            "covered": self.covered,
            "full_sky": self.full_sky,
            "index_ids": self.index_ids,
            "files": [index.name for index in self.indexes],
        }


def _scale_to_arcmin(header: fits.Header, keyword: str) -> float:
    value = float(header[keyword])
    comment = header.comments[keyword].lower()
    # astrometry.net writes radians ("Upper-bound index scale (radians)."); honour another
    # unit only when the comment names one.
    for unit in ("radian", "arcmin", "arcsec", "deg", "rad"):
        if unit in comment:
            return value * _UNIT_TO_ARCMIN[unit]
    return value * _UNIT_TO_ARCMIN["radian"]


def _optional_int(header: fits.Header, keyword: str) -> int | None:
    value = header.get(keyword)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_index_file(path: Path) -> IndexFile:
    """Read one index file's headers; ValueError says why the file cannot be used."""
    size = path.stat().st_size
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=True, lazy_load_hdus=False) as hdus:
                header = hdus[0].header.copy()
                last = hdus.fileinfo(len(hdus) - 1)
                end = int(last["datLoc"]) + int(last["datSpan"])
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        reason = str(exc).split(". ")[0].rstrip(".") or type(exc).__name__
        raise ValueError(f"not a readable FITS file ({reason})") from None
    truncated = [str(w.message) for w in caught if "truncated" in str(w.message).lower()]
    if truncated or end > size:
        raise ValueError(f"truncated: {size} bytes, its headers describe at least {end}")
    missing = [key for key in ("INDEXID", "SCALE_L", "SCALE_U") if key not in header]
    if missing:
        raise ValueError(
            f"not an astrometry.net index file (no {', '.join(missing)} in its header)"
        )
    try:
        index_id = int(header["INDEXID"])
        lower = _scale_to_arcmin(header, "SCALE_L")
        upper = _scale_to_arcmin(header, "SCALE_U")
    except (TypeError, ValueError):
        raise ValueError("INDEXID, SCALE_L or SCALE_U is not a number") from None
    if not (0 < lower <= upper):
        raise ValueError(
            f"bad quad scale range SCALE_L={header['SCALE_L']} SCALE_U={header['SCALE_U']}"
        )
    healpix = _optional_int(header, "HEALPIX")
    nside = _optional_int(header, "HPNSIDE")
    if header.get("ALLSKY") is True or healpix is None or healpix < 0:
        healpix = nside = None
    elif not nside:
        nside = 1  # a tiled index without HPNSIDE: astrometry.net's default
    return IndexFile(
        path=path,
        index_id=index_id,
        scale_lower=lower,
        scale_upper=upper,
        size=size,
        stars=_optional_int(header, "NSTARS"),
        quads=_optional_int(header, "NQUADS"),
        healpix=healpix,
        nside=nside,
    )


def scan_index_dirs(dirs: Iterable[Path | str]) -> IndexScan:
    """Every ``index-*.fits`` in ``dirs`` (smallest quads first), with the problems met."""
    files: list[IndexFile] = []
    problems: list[IndexProblem] = []
    seen: set[Path] = set()
    for entry in dirs:
        directory = Path(entry)
        if not directory.exists():
            problems.append(IndexProblem(directory, "missing", "the directory does not exist"))
            continue
        if not directory.is_dir():
            problems.append(IndexProblem(directory, "not a directory", "this is not a directory"))
            continue
        try:
            paths = sorted(p for p in directory.glob(GLOB) if p.is_file())
        except OSError as exc:
            problems.append(IndexProblem(directory, "unreadable", f"cannot list it: {exc}"))
            continue
        if not paths:
            problems.append(IndexProblem(directory, "empty", f"no {GLOB} files in it"))
            continue
        for path in paths:
            real = path.resolve()
            if real in seen:
                continue
            seen.add(real)
            try:
                files.append(read_index_file(path))
            except (OSError, ValueError) as exc:
                problems.append(IndexProblem(path, "unreadable", str(exc)))
    files.sort(key=lambda f: (f.scale_lower, f.index_id, f.healpix or -1, str(f.path)))
    return IndexScan(files, problems)


def _sky_complete(files: Sequence[IndexFile]) -> bool:
    """Whether the files of one INDEXID together cover the whole sky."""
    if any(f.all_sky for f in files):
        return True
    by_nside: dict[int, set[int]] = {}
    for f in files:
        if f.nside and f.healpix is not None:
            by_nside.setdefault(f.nside, set()).add(f.healpix)
    return any(len(tiles) >= 12 * nside * nside for nside, tiles in by_nside.items())


def covers(index: IndexFile, width: float) -> bool:
    """Whether the engine would use ``index`` on a field ``width`` degrees wide."""
    low = QUAD_MIN_FRACTION * width * 60.0
    high = QUAD_MAX_FRACTION * width * 60.0
    return index.scale_lower <= high and index.scale_upper >= low


def coverage(
    index_files: Sequence[IndexFile], widths: Sequence[float] = DEFAULT_WIDTHS
) -> list[CoverageBand]:
    """For each field width (degrees): the index files that can solve such a field."""
    groups: dict[int, list[IndexFile]] = {}
    for index in index_files:
        groups.setdefault(index.index_id, []).append(index)
    complete = {index_id: _sky_complete(members) for index_id, members in groups.items()}
    bands = []
    for width in widths:
        used = tuple(index for index in index_files if covers(index, width))
        bands.append(
            CoverageBand(
                width=width,
                quad_lower=QUAD_MIN_FRACTION * width * 60.0,
                quad_upper=QUAD_MAX_FRACTION * width * 60.0,
                indexes=used,
                full_sky=any(complete[index.index_id] for index in used),
            )
        )
    return bands


def covered_widths(index_files: Sequence[IndexFile]) -> list[tuple[float, float]]:
    """The ranges of field widths (degrees) some index covers, merged and in order."""
    spans = sorted(
        (
            index.scale_lower / QUAD_MAX_FRACTION / 60.0,
            min(index.scale_upper / QUAD_MIN_FRACTION / 60.0, MAX_FIELD_DEG),
        )
        for index in index_files
    )
    merged: list[tuple[float, float]] = []
    for low, high in spans:
        if low > MAX_FIELD_DEG:
            continue
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def format_degrees(value: float) -> str:
    return f"{value:.2g}°" if value < 1 else f"{value:.3g}°"


def summary(index_files: Sequence[IndexFile]) -> list[str]:
    """Sentences for people: which field widths can be solved, and what to add if needed."""
    if not index_files:
        return [
            "No index files: no field can be solved. Install Debian's astrometry-data-tycho2 "
            "packages (fields 0.4° and wider) or list a directory of index files in "
            "NOVA_INDEX_DIRS."
        ]
    spans = covered_widths(index_files)
    text = ", ".join(f"{format_degrees(lo)} to {format_degrees(hi)}" for lo, hi in spans)
    lines = [f"Fields from {text} wide are covered."]
    if spans[-1][1] >= MAX_FIELD_DEG:
        lines[0] = (
            lines[0][:-1] + f" ({format_degrees(MAX_FIELD_DEG)} is the widest the engine tries)."
        )
    for (_, previous_high), (low, _) in zip(spans, spans[1:], strict=False):
        lines.append(
            f"Fields between {format_degrees(previous_high)} and {format_degrees(low)} "
            "wide are not covered: no index has quads of that size."
        )
    smallest = spans[0][0]
    if smallest > DEFAULT_WIDTHS[0]:
        advice = f"They need {SMALL_QUAD_INDEXES}"
        if smallest > TYCHO2_SMALLEST_FIELD * 1.05:
            advice = (
                "Debian's astrometry-data-tycho2-07 … 19 packages cover fields down to "
                f"{format_degrees(TYCHO2_SMALLEST_FIELD)}; narrower ones need {SMALL_QUAD_INDEXES}"
            )
        lines.append(f"Fields narrower than {format_degrees(smallest)} are not covered. {advice}")
    partial = [band for band in coverage(index_files) if band.covered and not band.full_sky]
    if partial:
        widths = ", ".join(format_degrees(band.width) for band in partial)
        lines.append(
            f"Fields {widths} wide are covered in part of the sky only: some healpix tiles "
            "of their index files are missing."
        )
    return lines


def scan_as_json(scan: IndexScan, widths: Sequence[float] = DEFAULT_WIDTHS) -> dict[str, Any]:
    return {
        "files": [index.as_json() for index in scan],
        "problems": [problem.as_json() for problem in scan.problems],
        "coverage": [band.as_json() for band in coverage(scan, widths)],
        "covered_widths_deg": [list(span) for span in covered_widths(scan)],
        "summary": summary(scan),
    }
