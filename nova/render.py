"""Pictures of an upload for the browser: stored once in the cache directory, then served."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from PIL import Image as PILImage
from PIL import ImageDraw

DIRECT_MIMETYPES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif"}
DISPLAY_MAX = 1600  # longest side of a rendered (non-JPEG/PNG/GIF) image


def _stretch(data: np.ndarray) -> np.ndarray:
    """Map FITS pixel values to 8 bits with a 0.5-99.5 percentile linear stretch."""
    data = np.asarray(data, dtype=np.float64)
    while data.ndim > 2:
        data = data[0]
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    low, high = np.percentile(finite, [0.5, 99.5])
    if high <= low:
        high = low + 1
    scaled = np.clip((np.nan_to_num(data, nan=low) - low) / (high - low), 0, 1)
    # FITS rows run bottom-up; pictures run top-down.
    return (np.flipud(scaled) * 255).astype(np.uint8)


def _render_fits(path: Path, extension: int) -> PILImage.Image:
    with fits.open(path) as hdus:
        hdu = hdus[extension]
        if hdu.data is None:  # fpack: the image is in the first compressed extension
            hdu = next(h for h in hdus if h.is_image and h.data is not None)
        return PILImage.fromarray(_stretch(hdu.data))


def _render_star_list(path: Path, width: int, height: int) -> PILImage.Image:
    scale = min(1.0, DISPLAY_MAX / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = PILImage.new("L", size, 0)
    draw = ImageDraw.Draw(picture)
    with fits.open(path) as hdus:
        table = hdus[1].data
        xs, ys = table["X"], table["Y"]
    for x, y in zip(xs[:5000], ys[:5000], strict=True):
        # Star lists use FITS pixel coordinates: y up, first pixel centred at 1.
        px, py = (x - 1) * scale, (height - y) * scale
        draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=255)
    return picture


def render_display(
    source: Path, kind: str, width: int, height: int, extension: int, target: Path
) -> None:
    """Write a PNG rendering of ``source`` to ``target`` atomically."""
    if kind == "fits":
        picture = _render_fits(source, extension)
    elif kind == "xylist":
        picture = _render_star_list(source, width, height)
    else:
        with PILImage.open(source) as opened:
            picture = opened.convert("RGB") if opened.mode not in ("L", "RGB") else opened.copy()
    picture.thumbnail((DISPLAY_MAX, DISPLAY_MAX))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".png")
    os.close(fd)
    try:
        picture.save(tmp_name, format="PNG")
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
