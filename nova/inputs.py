"""Recognise an upload by its content and prepare it for the engine.

Supported: JPEG, PNG, GIF, TIFF and FITS images (FITS also fpack-compressed), star
lists as FITS tables with x/y columns in any letter case or as text, and any of these
compressed with gzip or bzip2. The file name is never consulted.
"""

from __future__ import annotations

import bz2
import gzip
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from PIL import Image as PILImage

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
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
MAX_TEXT_LIST_BYTES = 50 * 1024 * 1024
MAX_STAR_LIST_SIDE = 1_000_000  # pixels; as the image_width/image_height parameters
MAX_TEXT_HEADER_LINES = 3  # e.g. a title line and a column header such as "x y mag"
SUPPORTED_TEXT = (
    "Supported inputs: JPEG, PNG, GIF, TIFF or FITS images, star lists as a FITS table "
    "with x and y columns or as text (x y per line), optionally gzip or bzip2 compressed."
)


class UnsupportedInput(ValueError):
    """The upload is not something Nova can solve; the message tells the user why."""


@dataclass(frozen=True)
class PreparedInput:
    """What the engine will be given: a raster/FITS image, or a normalised star list."""

    kind: str  # jpeg, png, gif, tiff, fits or xylist
    path: Path
    width: int
    height: int
    fits_extension: int = 0

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
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    return None


def _decompress(path: Path, kind: str, out_dir: Path, max_bytes: int) -> Path:
    opener = gzip.open if kind == "gzip" else bz2.open
    target = out_dir / "uncompressed"
    written = 0
    try:
        with opener(path, "rb") as source, target.open("wb") as sink:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > max_bytes:
                    raise UnsupportedInput(
                        f"The {kind} file expands to more than {max_bytes // (1 << 20)} MB."
                    )
                sink.write(chunk)
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, UnsupportedInput):
            raise
        raise UnsupportedInput(f"The {kind} data is corrupt: {exc}") from None
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
                f"The {kind.upper()} image could not be decoded: {exc}"
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
    columns = [
        fits.Column(name="X", format="D", array=x),
        fits.Column(name="Y", format="D", array=y),
    ]
    if flux is not None:
        columns.append(
            fits.Column(name="FLUX", format="D", array=np.asarray(flux, dtype=np.float64)[finite])
        )
    target = out_dir / "stars.xyls"
    fits.BinTableHDU.from_columns(columns).writeto(target, overwrite=True)
    return PreparedInput(kind="xylist", path=target, width=width, height=height)


def _prepare_fits(
    path: Path, out_dir: Path, max_pixels: int, image_width: int, image_height: int
) -> PreparedInput:
    try:
        with fits.open(path, memmap=True) as hdus:
            for index, hdu in enumerate(hdus):
                shape = getattr(hdu, "shape", None) if hdu.is_image else None
                if isinstance(hdu, fits.CompImageHDU) or (
                    hdu.is_image and shape is not None and len(shape) >= 2
                ):
                    header = hdu.header
                    naxis = [header.get(f"ZNAXIS{i}", header.get(f"NAXIS{i}")) for i in (1, 2)]
                    width, height = int(naxis[0]), int(naxis[1])
                    if width * height > max_pixels:
                        raise UnsupportedInput(
                            f"The FITS image has {width}x{height} pixels; the limit is "
                            f"{max_pixels:,}."
                        )
                    if width < 2 or height < 2:
                        raise UnsupportedInput(f"The FITS image is only {width}x{height} pixels.")
                    # The engine reads the pixels later; a short file fails there, unexplained.
                    end = hdus.fileinfo(index)["datLoc"] + hdu.size  # size: data bytes
                    if not isinstance(hdu, fits.CompImageHDU) and path.stat().st_size < end:
                        raise UnsupportedInput(
                            f"The FITS file is truncated: its image needs {end:,} bytes, the "
                            f"file has {path.stat().st_size:,}."
                        )
                    if isinstance(hdu, fits.CompImageHDU):
                        # The engine reads plain FITS only: unpack fpack tiles first.
                        target = out_dir / "unpacked.fits"
                        fits.PrimaryHDU(data=hdu.data, header=None).writeto(target, overwrite=True)
                        return PreparedInput("fits", target, width, height, 0)
                    return PreparedInput("fits", path, width, height, index)
                if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
                    names = list(hdu.columns.names)
                    xy = _xy_columns(names)
                    if xy is None:
                        continue
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
        raise UnsupportedInput(f"The FITS file could not be read: {exc}") from None
    raise UnsupportedInput("The FITS file holds neither an image nor a table with x and y columns.")


def _parse_text_list(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if path.stat().st_size > MAX_TEXT_LIST_BYTES:
        return None
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None
    xs: list[float] = []
    ys: list[float] = []
    header_lines = 0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            header_lines += 1
            if xs or header_lines > MAX_TEXT_HEADER_LINES:
                return None  # prose, not a star list with a column header
            continue
        if len(numbers) < 2:
            return None
        xs.append(numbers[0])
        ys.append(numbers[1])
    if not xs:
        return None
    return np.array(xs), np.array(ys)


def prepare_input(
    path: Path,
    work_dir: Path,
    *,
    max_pixels: int,
    max_uncompressed_bytes: int,
    image_width: int = 0,
    image_height: int = 0,
) -> PreparedInput:
    """Recognise ``path`` and return what the engine should read; raise UnsupportedInput."""
    if path.stat().st_size == 0:
        raise UnsupportedInput("The file is empty.")
    kind = sniff(path)
    if kind in ("gzip", "bzip2"):
        path = _decompress(path, kind, work_dir, max_uncompressed_bytes)
        kind = sniff(path)
        if kind in ("gzip", "bzip2"):
            raise UnsupportedInput("Nested compression is not supported.")
    if kind in RASTER_KINDS:
        return _prepare_raster(path, kind, max_pixels)
    if kind == "fits":
        return _prepare_fits(path, work_dir, max_pixels, image_width, image_height)
    parsed = _parse_text_list(path)
    if parsed is not None:
        return _write_star_list(parsed[0], parsed[1], None, work_dir, image_width, image_height)
    raise UnsupportedInput("This file's type is not supported. " + SUPPORTED_TEXT)
