"""Recognise an upload by its content and prepare it for the engine.

Supported: JPEG, PNG, GIF, TIFF, FITS (also fpack-compressed) and XISF images, star
lists as FITS tables with x/y columns in any letter case or as text, and any of these
compressed with gzip or bzip2. The file name is never consulted. XISF (PixInsight's
format) is converted to a FITS image, which is what the engine reads.
"""

from __future__ import annotations

import bz2
import gzip
import warnings
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits
from PIL import Image as PILImage

from nova.engine.archive_limits import compression_bomb
from nova.engine.fits_layout import FitsLayoutError, Unit, read_layout
from nova.engine.input_formats import (
    RASTER_KINDS,
    SUPPORTED_TEXT,
    HeaderSource,
    PreparedInput,
    UnsupportedInput,
    decoder_reason,
    sniff,
)
from nova.engine.star_lists import (
    MAX_TEXT_LIST_BYTES,
    TEXT_SNIFF_BYTES,
    looks_like_text_list,
    parse_text_list,
    write_star_list,
    xy_columns,
)
from nova.engine.xisf_input import prepare_xisf

# An image may have a third axis (a cube: the engine reads its first plane), never more.
MAX_IMAGE_AXES = 3


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
        raise UnsupportedInput(f"The {kind} data is corrupt: {decoder_reason(exc)}") from None
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
                f"The {kind.upper()} image could not be decoded: {decoder_reason(exc)}"
            ) from None
    if width < 2 or height < 2:
        raise UnsupportedInput(f"The image is only {width}x{height} pixels.")
    return PreparedInput(kind=kind, path=path, width=width, height=height)


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
                xy = xy_columns(names)
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
                return write_star_list(
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
        raise UnsupportedInput(f"The FITS file could not be read: {decoder_reason(exc)}") from None
    raise UnsupportedInput("The FITS file holds neither an image nor a table with x and y columns.")


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
        return prepare_xisf(path, work_dir, max_pixels)
    parsed = parse_text_list(path, max_stars)
    if parsed is not None:
        return write_star_list(parsed[0], parsed[1], None, work_dir, image_width, image_height)
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
