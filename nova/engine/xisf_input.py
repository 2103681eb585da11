"""XISF (PixInsight's format) converted to the FITS image the engine reads, within limits."""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from nova.engine.input_formats import XISF_MAGIC, HeaderSource, PreparedInput, UnsupportedInput

XISF_IMAGE_NAME = "xisf-image.fits"
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


def prepare_xisf(path: Path, out_dir: Path, max_pixels: int) -> PreparedInput:
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
