"""Star lists: text lists told from prose, x/y columns found in a table, and the engine's
normalised star-list file written from positions."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nova.engine.fits_tables import float64_table
from nova.engine.input_formats import PreparedInput, UnsupportedInput

MAX_TEXT_LIST_BYTES = 50 * 1024 * 1024
MAX_STAR_LIST_SIDE = 1_000_000  # pixels; as the image_width/image_height parameters
MAX_TEXT_HEADER_LINES = 3  # e.g. a title line and a column header such as "x y mag"
# What the web process reads of a possible text star list to tell it from prose.
TEXT_SNIFF_BYTES = 4096


def xy_columns(names: list[str]) -> tuple[str, str] | None:
    by_lower = {name.lower(): name for name in names}
    if "x" in by_lower and "y" in by_lower:
        return by_lower["x"], by_lower["y"]
    if "x_image" in by_lower and "y_image" in by_lower:
        return by_lower["x_image"], by_lower["y_image"]
    return None


def write_star_list(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray | None,
    out_dir: Path,
    image_width: int,
    image_height: int,
) -> PreparedInput:
    """Write the engine's star-list format (X, Y[, FLUX], in the given order: brightest first)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        raise UnsupportedInput("The star list holds no finite x/y positions.")
    x, y = x[finite], y[finite]
    if (x < 0).any() or (y < 0).any():
        raise UnsupportedInput("The star list has negative x or y positions.")
    if max(float(x.max()), float(y.max()), image_width, image_height) > MAX_STAR_LIST_SIDE:
        # Positions such as 1e308 (or an IMAGEW card saying so) would make an image size no
        # database column can hold.
        raise UnsupportedInput(
            f"The star list has positions or an image size beyond {MAX_STAR_LIST_SIDE:,} "
            "pixels; x and y must be pixel positions."
        )
    width = image_width or math.ceil(float(x.max()))
    height = image_height or math.ceil(float(y.max()))
    if width < 1 or height < 1:
        raise UnsupportedInput("The star list does not span at least one pixel in x and y.")
    columns = {"X": x, "Y": y}
    if flux is not None:
        columns["FLUX"] = np.asarray(flux, dtype=np.float64)[finite]
    target = out_dir / "stars.xyls"
    target.write_bytes(float64_table(columns))
    return PreparedInput(kind="xylist", path=target, width=width, height=height)


def _text_rows(lines: list[str]) -> Iterator[tuple[float, float] | None]:
    """Classify the lines of a possible text star list: (x, y) for a position, None for a
    header line; raises _NotAList when the text is no star list (prose, one column)."""
    header_lines = 0
    seen_position = False
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            header_lines += 1
            if seen_position or header_lines > MAX_TEXT_HEADER_LINES:
                raise _NotAList() from None  # prose, not a star list with a column header
            yield None
            continue
        if len(numbers) < 2:
            raise _NotAList()
        seen_position = True
        yield numbers[0], numbers[1]


class _NotAList(Exception):
    pass


def looks_like_text_list(head: bytes) -> bool:
    """Whether the first bytes of a file could start a text star list: what the web
    process checks (a few kB) before the worker reads the whole list."""
    text = head[:TEXT_SNIFF_BYTES].decode("utf-8", "ignore")
    if "\x00" in text or not text.strip():
        return False
    lines = text.splitlines()
    cut = len(head) > TEXT_SNIFF_BYTES
    if cut and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut short
    try:
        rows = list(_text_rows(lines))
    except _NotAList:
        return False
    # Positions, or (in a long file) nothing but its column header so far.
    return any(row is not None for row in rows) or (cut and bool(rows))


def parse_text_list(path: Path, max_stars: int) -> tuple[np.ndarray, np.ndarray] | None:
    if path.stat().st_size > MAX_TEXT_LIST_BYTES:
        return None
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.splitlines()
    if len(lines) > max_stars + MAX_TEXT_HEADER_LINES and looks_like_text_list(
        text[:TEXT_SNIFF_BYTES].encode()
    ):
        # Counting lines is cheap; turning millions of them into floats is not.
        raise UnsupportedInput(
            f"The star list has {len(lines):,} lines; the limit is {max_stars:,} stars "
            "(NOVA_MAX_STARS)."
        )
    xs: list[float] = []
    ys: list[float] = []
    try:
        for row in _text_rows(lines):
            if row is not None:
                xs.append(row[0])
                ys.append(row[1])
    except _NotAList:
        return None
    if not xs:
        return None
    return np.array(xs), np.array(ys)
