"""Stage 1 inside the worker: the ``job.axy`` that ``solve-field --just-augment`` writes,
without the three Python interpreters it starts on the way.

For an image, solve-field (astrometry.net 0.93, ``solver/augment-xylist.c``) does this:

1. ``python3 -m astrometry.util.image2pnm`` picks a converter by file type (``jpegtopnm``,
   ``pngtopnm``, ``giftopnm``, ``tifftopnm``); a FITS image (``--fits-image``) is read as is.
2. The PNM becomes a FITS image: ``ppmtopgm | an-pnmtofits`` (colour), ``an-pnmtofits``
   (grey) or ``pbmtopgm 3 3 | an-pnmtofits`` (bitmap).
3. image2xy, in solve-field's own process, finds the sources (``--downsample``,
   ``--invert``; halving the image again, at most 3 times, while it finds none).
4. ``python3 -m astrometry.util.removelines`` drops sources lined up in one pixel column/row.
5. The list is sorted by brightness in C: the descending orders of FLUX and of
   FLUX + BACKGROUND, interleaved.
6. ``python3 -m astrometry.util.uniformize -n 10`` spreads the list over about 10 boxes.
7. It is cut to ``--objs`` sources and written with the augmented header.

A star list skips 1-3 and 5. Each Python start-up costs about 0.3 s, mostly importing
numpy and astropy, which the worker has already done. Here:

* steps 1-2 run the same C programs;
* steps 3 and 5 run in ``solve-field --fits-image ... --no-remove-lines --uniformize 0
  --dont-augment``, which does only those (C only), so extraction and the order of equal
  brightnesses (libastrometry's own quicksort, not a stable sort) are solve-field's;
* step 4 runs in numpy. It only removes rows, so it can be judged on the sorted list; when
  it would remove any, the order of the rest after solve-field's sort cannot be had
  without its quicksort, and solve-field does the whole stage instead (rare: it is for
  bleed trails and bad columns; none in the sample photos);
* steps 6-7 run in numpy with uniformize.py's arithmetic (same float32/float64 operations,
  so the same rounding), then ``solve-field --just-augment`` writes the header for the
  finished list (``--no-remove-lines --uniformize 0``: C only).

The result is solve-field's ``job.axy``: same sources in the same order, same header
(``tests/integration/test_extraction.py`` compares them). What cannot be reproduced raises
``Unsupported`` and the caller runs solve-field: SourceExtractor, FITS images with a WCS
header (solve-field asks the engine to verify it first; not with ``--no-verify``, which
Nova passes when header hints check that WCS themselves), sources in lines, and file kinds
without a converter.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from nova.engine.commands import (
    NO_VERIFY,
    augment_sources_command,
    image_extraction_options,
    working_options,
)
from nova.engine.fits_tables import FITS_BLOCK
from nova.engine.input_formats import PreparedInput
from nova.engine.params import SolveParams

# image2pnm's converters for the kinds Nova recognises (``file`` names the same kinds).
CONVERTERS = {"jpeg": "jpegtopnm", "png": "pngtopnm", "gif": "giftopnm", "tiff": "tifftopnm"}
# How the PNM (by its magic number) becomes a FITS image, as solve-field converts it.
PNM_TO_FITS = {
    b"P6": 'ppmtopgm "$1" | an-pnmtofits > "$2"',
    b"P3": 'ppmtopgm "$1" | an-pnmtofits > "$2"',
    b"P5": 'exec an-pnmtofits "$1" > "$2"',
    b"P2": 'exec an-pnmtofits "$1" > "$2"',
    b"P4": 'pbmtopgm 3 3 "$1" | an-pnmtofits > "$2"',
    b"P1": 'pbmtopgm 3 3 "$1" | an-pnmtofits > "$2"',
}
TOOLS = ("solve-field", "an-pnmtofits", "ppmtopgm", "pbmtopgm", "sh")
# solve-field's fixed settings: removelines cuts at significance 100, uniformize uses
# about 10 boxes.
REMOVELINES_CUT = 100.0
UNIFORMIZE_BOXES = 10
CARD = 80
# Files of this stage in the work directory (none is kept: see tasks.KEEP).
PNM_NAME = "extract-image.pnm"
FITS_NAME = "extract-image.fits"
SORTED_NAME = "extract-sorted.xyls"
XYLIST_NAME = "extract-sources.xyls"
SCRATCH_AXY_NAME = "extract-unused.axy"

Runner = Callable[[list[str]], int]
"""Runs a command (logging it) and returns its exit status; raises at the deadline."""


class Unsupported(Exception):
    """This job's extraction is left to ``solve-field --just-augment``; says why."""


@dataclass(frozen=True)
class Extraction:
    """What the in-process stage 1 did, for the job log."""

    width: int
    height: int
    found: int  # sources image2xy found, or rows of the star list
    lines_removed: int  # sources removelines dropped
    boxes: tuple[int, int] | None  # uniformize's grid (None: left as it was)
    sources: int  # sources written to job.axy

    def describe(self) -> str:
        grid = f"{self.boxes[0]} x {self.boxes[1]} boxes" if self.boxes else "not uniformized"
        return (
            f"in-process extraction: {self.width} x {self.height} pixels, {self.found} sources "
            f"found, {self.lines_removed} in lines removed, {grid}, {self.sources} kept"
        )


def unsupported_reason(params: SolveParams, prepared: PreparedInput) -> str | None:
    """Why this job cannot be extracted here (before anything runs), or None."""
    if params.use_sextractor:
        return "SourceExtractor was asked for"
    if prepared.kind not in CONVERTERS and prepared.kind not in ("fits", "xylist"):
        return f"no converter for {prepared.kind!r} images"
    converter = CONVERTERS.get(prepared.kind)
    missing = [tool for tool in (*TOOLS, converter) if tool and shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    return None


def extract(
    params: SolveParams,
    prepared: PreparedInput,
    work_dir: Path,
    *,
    run: Runner,
    augment_options: Sequence[str],
    max_sources: int,
) -> Extraction:
    """Write ``job.axy`` (named in ``augment_options``) as solve-field would; raise
    ``Unsupported`` when solve-field must do it, ``RuntimeError`` when a tool fails.

    ``augment_options`` are solve-field's options for the header (scale, position, parity,
    tweak, output names ...) without the input and its extraction options.
    """
    reason = unsupported_reason(params, prepared)
    if reason is not None:
        raise Unsupported(reason)
    if prepared.is_star_list:
        listing, width, height = prepared.path, prepared.width, prepared.height
    else:
        # With --no-verify, solve-field ignores the image's WCS: so can this stage.
        image, extension = _fits_image(prepared, work_dir, run, NO_VERIFY in augment_options)
        listing = _sorted_sources(params, image, extension, work_dir, run)
        with fits.open(image) as hdus:
            header = hdus[extension].header
            width, height = int(header["NAXIS1"]), int(header["NAXIS2"])
    x, y = _positions(listing)
    keep = remove_lines(x, y)
    lines_removed = int(len(keep) - keep.sum())
    if lines_removed and not prepared.is_star_list:
        raise Unsupported(f"removelines drops {lines_removed} sources in lines")
    rows = np.flatnonzero(keep)
    order, boxes = uniformize_order(x[rows], y[rows])
    rows = rows[order][:max_sources]
    xylist = work_dir / XYLIST_NAME
    _write_rows(listing, rows, xylist)
    # Done above, as the Python helpers do it; an xylist input is not sorted again.
    command = augment_sources_command(augment_options, width, height, xylist)
    _check(run(command), "solve-field --just-augment")
    return Extraction(width, height, len(x), lines_removed, boxes, len(rows))


def _check(code: int, what: str) -> None:
    if code != 0:
        raise RuntimeError(f"{what} failed (exit status {code})")


def _fits_image(
    prepared: PreparedInput, work_dir: Path, run: Runner, ignore_wcs: bool = False
) -> tuple[Path, int]:
    """The FITS image (path, extension) from which solve-field extracts the sources."""
    if prepared.kind == "fits":
        header = fits.getheader(prepared.path, prepared.fits_extension)
        if not ignore_wcs and ("CTYPE1" in header or "CTYPE2" in header):
            # solve-field reads a WCS from the image and asks the engine to verify it first.
            raise Unsupported("the FITS image has a WCS header")
        return prepared.path, prepared.fits_extension
    pnm, image = work_dir / PNM_NAME, work_dir / FITS_NAME
    converter = CONVERTERS[prepared.kind]
    script = f'exec {converter} "$1" > "$2"'
    _check(run(["sh", "-c", script, "sh", str(prepared.path), str(pnm)]), converter)
    with pnm.open("rb") as handle:
        magic = handle.read(2)
    if magic not in PNM_TO_FITS:
        raise Unsupported(f"{converter} wrote an unexpected PNM type {magic!r}")
    _check(run(["sh", "-c", PNM_TO_FITS[magic], "sh", str(pnm), str(image)]), "an-pnmtofits")
    return image, 0


def _sorted_sources(
    params: SolveParams, image: Path, extension: int, work_dir: Path, run: Runner
) -> Path:
    """image2xy and the brightness sort, by solve-field itself and nothing else."""
    target = work_dir / SORTED_NAME
    target.unlink(missing_ok=True)
    command = ["solve-field", *working_options(work_dir), "--axy", SCRATCH_AXY_NAME]
    command += ["--fits-image", "--extension", str(extension), "--no-remove-lines"]
    command += ["--uniformize", "0", "--dont-augment", "--keep-xylist", str(target)]
    command += image_extraction_options(params)  # as Nova's solve-field command
    _check(run([*command, str(image)]), "solve-field (extraction)")
    if not target.exists():
        raise RuntimeError("solve-field wrote no source list")
    return target


def _positions(listing: Path) -> tuple[np.ndarray, np.ndarray]:
    """X and Y of the table in extension 1, in the file's own type (float32 from image2xy)."""
    with fits.open(listing) as hdus:
        if len(hdus) < 2 or not isinstance(hdus[1], fits.BinTableHDU):
            raise Unsupported("the source list is not a FITS table in extension 1")
        table = hdus[1]
        # The Python helpers read the X and Y columns by these exact names.
        if not {"X", "Y"} <= set(table.columns.names):
            raise Unsupported("the source list has no X and Y columns")
        if table.header.get("PCOUNT", 0) != 0:
            raise Unsupported("the source list has variable-length columns")
        return np.array(table.data["X"]), np.array(table.data["Y"])


def _write_rows(source: Path, rows: np.ndarray, target: Path) -> None:
    """Write a minimal primary HDU and extension 1 of ``source`` with only ``rows``, in that
    order: its header cards as they were (the row count aside), its rows byte for byte."""
    with fits.open(source) as hdus:
        info = hdus[1].fileinfo()
        row_bytes, count = int(hdus[1].header["NAXIS1"]), int(hdus[1].header["NAXIS2"])
        header_start, data_start = int(info["hdrLoc"]), int(info["datLoc"])
    raw = source.read_bytes()
    header = bytearray(raw[header_start:data_start])
    for offset in range(0, len(header), CARD):
        if header[offset : offset + 8] == b"NAXIS2  ":
            old = fits.Card.fromstring(bytes(header[offset : offset + CARD]).decode("ascii"))
            header[offset : offset + CARD] = fits.Card(
                "NAXIS2", len(rows), old.comment
            ).image.encode("ascii")
            break
    table = np.frombuffer(raw, dtype=np.uint8, count=count * row_bytes, offset=data_start)
    data = table.reshape(count, row_bytes)[rows].tobytes()
    primary = io.BytesIO()
    fits.PrimaryHDU().writeto(primary)
    padding = b"\0" * (-len(data) % FITS_BLOCK)
    target.write_bytes(primary.getvalue() + bytes(header) + data + padding)


# -- removelines, sorting, uniformize -------------------------------------------------------


def remove_lines(x: np.ndarray, y: np.ndarray, cut: float = REMOVELINES_CUT) -> np.ndarray:
    """Which sources to keep (bool mask): not in an over-full pixel column or row.

    removelines.py histograms X and Y in bins one pixel wide centred on whole pixels, and
    drops every source in a bin whose count is too unlikely under a Poisson-like score.
    """
    if len(x) == 0:
        return np.ones(0, dtype=bool)
    return _line_free(x, -cut) & _line_free(y, -cut)


def _line_free(values: np.ndarray, logcut: float) -> np.ndarray:
    # Edges at -0.5, 0.5, 1.5, ... past the largest value (numpy half-open bins, the last
    # one closed), as removelines.py lays them out.
    edges = -0.5 + np.arange(0, float(values.max()) + 2, 1)
    counts, _ = np.histogram(values, edges)
    occupied = np.nonzero(counts > 1)[0]
    if len(occupied) == 0:
        return np.ones(len(values), dtype=bool)
    excess = counts[occupied] - 1
    mean = int(excess.sum()) / float(len(occupied))
    # removelines.py's score subtracts sum(range(k)) = k (k - 1) / 2 (not log k!); kept so,
    # and evaluated in the same order for the same rounding.
    score = excess * np.log(mean) - mean - excess * (excess - 1) // 2
    bad = occupied[score < logcut]
    if len(bad) == 0:
        return np.ones(len(values), dtype=bool)
    # The bin of each value: edges[j] <= value < edges[j + 1].
    bins = np.searchsorted(edges, values, side="right") - 1
    return ~np.isin(bins, bad)


def uniformize_order(
    x: np.ndarray, y: np.ndarray, boxes: int = UNIFORMIZE_BOXES
) -> tuple[np.ndarray, tuple[int, int] | None]:
    """uniformize.py's order: the sources in a grid of about ``boxes`` boxes over their
    bounding box; first the first source of every box, then the second of every box, ...,
    each round in table order. Non-finite positions are dropped. Returns the row indices
    and the grid (None when the sources span no area and the order is left alone).

    The arithmetic follows uniformize.py under Debian's numpy 1.24: the box indices in the
    positions' own type (float32 for image2xy's lists), the grid size in float64.
    """
    rows = np.arange(len(x))
    if len(x) == 0:
        return rows, None
    finite = np.isfinite(x) & np.isfinite(y)
    rows, x, y = rows[finite], x[finite], y[finite]
    if len(rows) == 0:
        return rows, None
    x_low, y_low = x.min(), y.min()
    width, height = x.max() - x_low, y.max() - y_low  # numpy scalars of the positions' type
    if width == 0 or height == 0:
        return rows, None
    # W*H in the positions' type, then float64 (a numpy 1.24 scalar / Python float).
    box_side = np.sqrt(float(width * height) / float(boxes))
    nx = int(max(1, np.round(float(width) / box_side)))
    ny = int(max(1, np.round(boxes / float(nx))))
    kind = x.dtype.type
    ix = np.clip(np.floor((x - x_low) / kind(width) * kind(nx)), 0, nx - 1).astype(int)
    iy = np.clip(np.floor((y - y_low) / kind(height) * kind(ny)), 0, ny - 1).astype(int)
    box = iy * nx + ix
    # Rank of each source within its box, in table order.
    by_box = np.argsort(box, kind="stable")
    sorted_boxes = box[by_box]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_boxes)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(box)]))
    rank = np.empty(len(box), dtype=np.intp)
    rank[by_box] = np.arange(len(box)) - group_start
    return rows[np.lexsort((np.arange(len(box)), rank))], (nx, ny)
