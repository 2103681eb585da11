"""Recognise an upload by its content and prepare it for the engine.

Supported: JPEG, PNG, GIF, TIFF, FITS (also fpack-compressed) and XISF images, star
lists as FITS tables with x/y columns in any letter case or as text, and any of these
compressed with gzip or bzip2. The file name is never consulted. XISF (PixInsight's
format) is converted to a FITS image, which is what the engine reads.
"""

from __future__ import annotations

import bz2
import gzip
import math
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from PIL import Image as PILImage

from nova.engine.archives import compression_bomb
from nova.engine.fits_layout import FitsLayoutError, Unit, read_layout
from nova.engine.redaction import without_server_paths

RASTER_MAGIC = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
RASTER_KINDS = frozenset(RASTER_MAGIC.values())
FITS_MAGIC = b"SIMPLE  ="
XISF_MAGIC = b"XISF0100"  # monolithic XISF 1.0
XISF_IMAGE_NAME = "xisf-image.fits"
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
MAX_TEXT_LIST_BYTES = 50 * 1024 * 1024
MAX_STAR_LIST_SIDE = 1_000_000  # pixels; as the image_width/image_height parameters
MAX_TEXT_HEADER_LINES = 3  # e.g. a title line and a column header such as "x y mag"
# An image may have a third axis (a cube: the engine reads its first plane), never more.
MAX_IMAGE_AXES = 3
# What the web process reads of a possible text star list to tell it from prose.
TEXT_SNIFF_BYTES = 4096
SUPPORTED_TEXT = (
    "Supported inputs: JPEG, PNG, GIF, TIFF, FITS or XISF images, star lists as a FITS table "
    "with x and y columns or as text (x y per line), optionally gzip or bzip2 compressed."
)


class UnsupportedInput(ValueError):
    """The upload is not something Nova can solve; the message tells the user why."""


def _reason(exc: BaseException) -> str:
    """A decoder's message for the user: decoders name the file they read by its path on
    the server (Pillow: "cannot identify image file '/srv/...'"), which users never see."""
    return without_server_paths(str(exc))


@dataclass(frozen=True)
class HeaderSource:
    """Where the header describing an image is: the file as uploaded (decompressed), before
    any conversion for the engine (an XISF file, an fpack-compressed FITS HDU)."""

    kind: str  # fits, xisf, jpeg, png, tiff, gif or xylist
    path: Path
    fits_extension: int = 0


@dataclass(frozen=True)
class PreparedInput:
    """What the engine will be given: a raster/FITS image, or a normalised star list."""

    kind: str  # jpeg, png, gif, tiff, fits or xylist
    path: Path
    width: int
    height: int
    fits_extension: int = 0
    converted_from: HeaderSource | None = None  # set when ``path`` is a conversion

    @property
    def header_source(self) -> HeaderSource:
        return self.converted_from or HeaderSource(self.kind, self.path, self.fits_extension)

    @property
    def is_star_list(self) -> bool:
        return self.kind == "xylist"

    @property
    def y_axis_down(self) -> bool:
        """Raster formats store the top row first; FITS and star lists have y pointing up."""
        return self.kind in RASTER_KINDS


def sniff(path: Path) -> str | None:
    """Name the format of ``path`` from its first bytes, or None when unknown."""
    with path.open("rb") as handle:
        head = handle.read(16)
    for magic, kind in RASTER_MAGIC.items():
        if head.startswith(magic):
            return kind
    if head.startswith(FITS_MAGIC):
        return "fits"
    if head.startswith(XISF_MAGIC):
        return "xisf"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    return None


def _decompress(path: Path, kind: str, out_dir: Path, max_bytes: int, max_ratio: int) -> Path:
    opener = gzip.open if kind == "gzip" else bz2.open
    target = out_dir / "uncompressed"
    compressed = path.stat().st_size
    written = 0
    try:
        with opener(path, "rb") as source, target.open("wb") as sink:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise UnsupportedInput(
                        f"The {kind} file expands to more than {max_bytes // (1 << 20)} MB."
                    )
                if compression_bomb(written, compressed, max_ratio):
                    raise UnsupportedInput(
                        f"The {kind} file expands more than {max_ratio} times "
                        "(NOVA_MAX_COMPRESSION_RATIO); compression bombs are refused."
                    )
                sink.write(chunk)
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, UnsupportedInput):
            raise
        raise UnsupportedInput(f"The {kind} data is corrupt: {_reason(exc)}") from None
    return target


def _prepare_raster(path: Path, kind: str, max_pixels: int) -> PreparedInput:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        try:
            with PILImage.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UnsupportedInput(
                        f"The image has {width}x{height} pixels; the limit is {max_pixels:,}."
                    )
                image.load()  # decode fully so truncated or corrupt files are caught here
        except UnsupportedInput:
            raise
        except (
            OSError,
            SyntaxError,
            ValueError,
            PILImage.DecompressionBombError,
            PILImage.DecompressionBombWarning,
        ) as exc:
            raise UnsupportedInput(
                f"The {kind.upper()} image could not be decoded: {_reason(exc)}"
            ) from None
    if width < 2 or height < 2:
        raise UnsupportedInput(f"The image is only {width}x{height} pixels.")
    return PreparedInput(kind=kind, path=path, width=width, height=height)


def _xy_columns(names: list[str]) -> tuple[str, str] | None:
    by_lower = {name.lower(): name for name in names}
    if "x" in by_lower and "y" in by_lower:
        return by_lower["x"], by_lower["y"]
    if "x_image" in by_lower and "y_image" in by_lower:
        return by_lower["x_image"], by_lower["y_image"]
    return None


def _write_star_list(
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
    target.write_bytes(_double_table(columns))
    return PreparedInput(kind="xylist", path=target, width=width, height=height)


@dataclass(frozen=True)
class _Bounds:
    max_pixels: int
    max_uncompressed_bytes: int
    max_ratio: int
    max_stars: int


def _check_image_unit(unit: Unit, bounds: _Bounds, compressed_bytes: int) -> tuple[int, int]:
    """Refuse an image unit over the pixel, axis, byte or ratio limits; its width and height."""
    axes = unit.image_axes
    if len([axis for axis in axes if axis > 1]) > MAX_IMAGE_AXES:
        raise UnsupportedInput(
            f"The FITS image has {len(axes)} axes; at most {MAX_IMAGE_AXES} (a cube) are read."
        )
    width, height = axes[0], axes[1]
    planes = unit.pixels // max(1, width * height)
    if unit.pixels > bounds.max_pixels:
        shape = "x".join(str(axis) for axis in axes)
        raise UnsupportedInput(
            f"The FITS image has {shape} pixels; the limit is {bounds.max_pixels:,}"
            + (" for all its planes together." if planes > 1 else ".")
        )
    if width < 2 or height < 2:
        raise UnsupportedInput(f"The FITS image is only {width}x{height} pixels.")
    if unit.is_compressed_image:
        expanded = unit.uncompressed_bytes
        if expanded > bounds.max_uncompressed_bytes:
            raise UnsupportedInput(
                f"The tile-compressed FITS image expands to more than "
                f"{bounds.max_uncompressed_bytes // (1 << 20)} MB."
            )
        if compression_bomb(expanded, compressed_bytes, bounds.max_ratio):
            raise UnsupportedInput(
                f"The tile-compressed FITS image expands more than {bounds.max_ratio} times "
                "(NOVA_MAX_COMPRESSION_RATIO); compression bombs are refused."
            )
    return width, height


FITS_BLOCK = 2880


def _header_block(cards: list[tuple[str, object]]) -> bytes:
    """FITS header cards (keyword, value: bool, int or short str) and END, padded."""
    lines = []
    for keyword, value in cards:
        if isinstance(value, bool):
            text = f"{'T' if value else 'F':>20}"
        elif isinstance(value, int):
            text = f"{value:>20}"
        else:
            text = f"'{value:<8}'"
        lines.append(f"{keyword:<8}= {text}".ljust(80))
    lines.append("END".ljust(80))
    raw = "".join(lines).encode("ascii")
    return raw + b" " * (-len(raw) % FITS_BLOCK)


def _double_table(columns: dict[str, np.ndarray]) -> bytes:
    """An empty primary HDU and a binary table of float64 columns, as astropy writes them.

    Written by hand: astropy's table writer costs about 15 ms a list, more than a hinted
    solve of a time-series frame takes in the engine.
    """
    rows = len(next(iter(columns.values())))
    primary = _header_block([("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 0), ("EXTEND", True)])
    cards: list[tuple[str, object]] = [
        ("XTENSION", "BINTABLE"),
        ("BITPIX", 8),
        ("NAXIS", 2),
        ("NAXIS1", 8 * len(columns)),
        ("NAXIS2", rows),
        ("PCOUNT", 0),
        ("GCOUNT", 1),
        ("TFIELDS", len(columns)),
    ]
    for number, name in enumerate(columns, start=1):
        cards += [(f"TTYPE{number}", name), (f"TFORM{number}", "D")]
    table = np.empty(rows, dtype=[(name, ">f8") for name in columns])
    for name, values in columns.items():
        table[name] = values
    data = table.tobytes()
    return primary + _header_block(cards) + data + b"\0" * (-len(data) % FITS_BLOCK)


def _prepare_fits(
    path: Path, out_dir: Path, bounds: _Bounds, image_width: int, image_height: int
) -> PreparedInput:
    try:
        units = read_layout(path)
    except FitsLayoutError as exc:
        raise UnsupportedInput(str(exc)) from None
    compressed_bytes = path.stat().st_size
    try:
        with fits.open(path, memmap=True) as hdus:
            for unit in units:
                if unit.is_compressed_image or (
                    unit.xtension in ("", "IMAGE") and len(unit.axes) >= 2
                ):
                    width, height = _check_image_unit(unit, bounds, compressed_bytes)
                    if unit.is_compressed_image:
                        # The engine reads plain FITS only: unpack fpack tiles first.
                        target = out_dir / "unpacked.fits"
                        data = hdus[unit.index].data
                        fits.PrimaryHDU(data=data, header=None).writeto(target, overwrite=True)
                        return PreparedInput(
                            "fits", target, width, height, 0, HeaderSource("fits", path, unit.index)
                        )
                    return PreparedInput("fits", path, width, height, unit.index)
                if unit.xtension not in ("BINTABLE", "TABLE"):
                    continue
                hdu = hdus[unit.index]
                names = list(hdu.columns.names)
                xy = _xy_columns(names)
                if xy is None:
                    continue
                rows = unit.axes[1] if len(unit.axes) > 1 else 0
                if rows > bounds.max_stars:
                    raise UnsupportedInput(
                        f"The star list has {rows:,} rows; the limit is {bounds.max_stars:,} "
                        "(NOVA_MAX_STARS)."
                    )
                data = hdu.data
                # Star lists written by the engine or by clients often carry the
                # image size in the table header; an explicit image_width wins.
                image_width = image_width or int(hdu.header.get("IMAGEW", 0) or 0)
                image_height = image_height or int(hdu.header.get("IMAGEH", 0) or 0)
                flux_name = next((n for n in names if n.lower() in ("flux", "flux_auto")), None)
                return _write_star_list(
                    data[xy[0]],
                    data[xy[1]],
                    data[flux_name] if flux_name else None,
                    out_dir,
                    image_width,
                    image_height,
                )
    except UnsupportedInput:
        raise
    except Exception as exc:  # astropy raises many types for malformed FITS
        raise UnsupportedInput(f"The FITS file could not be read: {_reason(exc)}") from None
    raise UnsupportedInput("The FITS file holds neither an image nor a table with x and y columns.")


MAX_XISF_CHANNELS = 4
MAX_XISF_HEADER_BYTES = 4 * 1024 * 1024  # the XML header; capture software writes ~20 KB


def check_xisf_header_size(path: Path, limit: int) -> int:
    """The XML header's length; ValueError when the file is no XISF or it is too long
    (checked before the XML parser sees it)."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if not head.startswith(XISF_MAGIC) or len(head) < 12:
        raise ValueError("not a monolithic XISF file")
    length = int.from_bytes(head[8:12], "little")
    if length > limit:
        raise ValueError(f"its XML header is {length:,} bytes; the limit is {limit:,}")
    return length


def _prepare_xisf(path: Path, out_dir: Path, max_pixels: int) -> PreparedInput:
    """Write the first image of an XISF file as a FITS image (grey: the mean of its
    channels). XISF stores the top row first; the FITS is flipped so that it shows the same
    picture (FITS rows run bottom-up)."""
    from xisf import XISF

    try:
        check_xisf_header_size(path, MAX_XISF_HEADER_BYTES)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            document = XISF(str(path))
            images = document.get_images_metadata()
            if not images:
                raise UnsupportedInput("The XISF file holds no image.")
            width, height, channels = (int(n) for n in images[0]["geometry"])
            if width * height > max_pixels:
                raise UnsupportedInput(
                    f"The XISF image has {width}x{height} pixels; the limit is {max_pixels:,}."
                )
            if width < 2 or height < 2 or not 1 <= channels <= MAX_XISF_CHANNELS:
                raise UnsupportedInput(
                    f"The XISF image is {width}x{height} pixels with {channels} channels."
                )
            pixels = _xisf_pixels(document, images[0], path)
    except UnsupportedInput:
        raise
    except Exception as exc:  # the reader raises many types for malformed files
        raise UnsupportedInput(f"The XISF file could not be read: {str(exc)[:200]}") from None
    if pixels.ndim == 3:
        pixels = pixels[..., 0] if pixels.shape[2] == 1 else pixels.mean(axis=2, dtype=np.float32)
    if pixels.shape != (height, width):
        raise UnsupportedInput("The XISF image's pixels do not match its geometry.")
    target = out_dir / XISF_IMAGE_NAME
    fits.PrimaryHDU(data=np.flipud(pixels)).writeto(target, overwrite=True)
    return PreparedInput("fits", target, width, height, 0, HeaderSource("xisf", path))


def _xisf_pixels(document: Any, image: dict[str, Any], path: Path) -> np.ndarray:
    """The first image's pixels (height, width, channels), decompressed within its size.

    The size a compressed block declares must be the geometry's; lz4 and zstd stop there
    (the reader passes it on), but zlib.decompress has no bound, so zlib blocks are
    inflated here at most to that size (a zlib bomb is refused, not expanded).
    """
    width, height, channels = (int(n) for n in image["geometry"])
    dtype = np.dtype(image["dtype"])
    expected = width * height * channels * dtype.itemsize
    compression = image.get("compression")
    if compression is None:
        return document.read_image(0)
    codec, size, item_size = compression
    if int(size) != expected:
        raise UnsupportedInput(
            f"The XISF image declares {size} bytes of pixels; its geometry needs {expected}."
        )
    if not str(codec).startswith("zlib"):
        return document.read_image(0)
    location = image["location"]
    if location[0] != "attachment":
        raise UnsupportedInput("zlib-compressed XISF data outside an attached block.")
    _, position, length = location
    with path.open("rb") as handle:
        handle.seek(int(position))
        packed = handle.read(int(length))
    inflater = zlib.decompressobj()
    data = inflater.decompress(packed, expected)
    if len(data) != expected or inflater.unconsumed_tail:
        raise UnsupportedInput("The XISF image's zlib data do not match its geometry.")
    if item_size:  # byte shuffling: every sample's first bytes, then its second bytes ...
        data = np.frombuffer(data, np.uint8).reshape(int(item_size), -1).T.tobytes()
    planes = np.frombuffer(data, dtype=dtype).reshape(channels, height, width)
    return np.transpose(planes, (1, 2, 0))


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


def _parse_text_list(path: Path, max_stars: int) -> tuple[np.ndarray, np.ndarray] | None:
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


def prepare_input(
    path: Path,
    work_dir: Path,
    *,
    max_pixels: int,
    max_uncompressed_bytes: int,
    max_ratio: int,
    max_stars: int,
    image_width: int = 0,
    image_height: int = 0,
) -> PreparedInput:
    """Recognise ``path`` and return what the engine should read; raise UnsupportedInput.

    This decodes untrusted data: callers run it through ``sandbox.run_limited``.
    """
    if path.stat().st_size == 0:
        raise UnsupportedInput("The file is empty.")
    kind = sniff(path)
    if kind in ("gzip", "bzip2"):
        path = _decompress(path, kind, work_dir, max_uncompressed_bytes, max_ratio)
        kind = sniff(path)
        if kind in ("gzip", "bzip2"):
            raise UnsupportedInput("Nested compression is not supported.")
    if kind in RASTER_KINDS:
        return _prepare_raster(path, kind, max_pixels)
    bounds = _Bounds(max_pixels, max_uncompressed_bytes, max_ratio, max_stars)
    if kind == "fits":
        return _prepare_fits(path, work_dir, bounds, image_width, image_height)
    if kind == "xisf":
        return _prepare_xisf(path, work_dir, max_pixels)
    parsed = _parse_text_list(path, max_stars)
    if parsed is not None:
        return _write_star_list(parsed[0], parsed[1], None, work_dir, image_width, image_height)
    raise UnsupportedInput("This file's type is not supported. " + SUPPORTED_TEXT)


def sniff_upload(path: Path, max_text_bytes: int = MAX_TEXT_LIST_BYTES) -> None:
    """What the web process checks of a single upload: its size and first bytes only.

    Refuses an empty file and one that is neither a known format nor the start of a text
    star list; everything else is decoded by the worker (in a sandbox), which gives the
    submission its reason when it refuses it.
    """
    size = path.stat().st_size
    if size == 0:
        raise UnsupportedInput("The file is empty.")
    if sniff(path) is not None:
        return
    with path.open("rb") as handle:
        head = handle.read(TEXT_SNIFF_BYTES + 1)
    if size <= max_text_bytes and looks_like_text_list(head):
        return
    raise UnsupportedInput("This file's type is not supported. " + SUPPORTED_TEXT)
