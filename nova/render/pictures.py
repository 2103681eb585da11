"""Pictures of uploads and solutions, the common part: the image as displayed, the field in
display orientation, scales, fonts and saving. What is drawn over a field lives in
``nova.render.overlays``; the field on the sky (sky plots, KMZ) in ``nova.render.sky``.

Every picture is drawn in *display orientation*: raster images as stored (top row first),
FITS images and star lists with y pointing up, as astronomers view them. The engine numbers
pixels in file order, so for FITS and star lists the solved WCS is flipped in y before it is
used on a displayed picture (``display_wcs_header``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from nova.engine.input_formats import RASTER_KINDS, PreparedInput, sniff

DISPLAY_MAX = 640  # nova's "display" size: longest side at most 640 px
THUMBNAIL_MAX = 256
SIP_PREFIXES = ("A", "B", "AP", "BP")


@dataclass(frozen=True)
class Field:
    """A solved image as displayed: its picture at full size and the WCS that fits it."""

    picture: PILImage.Image  # RGB, display orientation, full resolution
    header: fits.Header  # WCS for ``picture`` (FITS 1-based pixel convention)
    width: int
    height: int
    y_flipped: bool  # True when display y runs opposite to the engine's y

    def wcs(self) -> WCS:
        return make_wcs(self.header)

    def engine_to_display(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Engine pixel coordinates (1-based) to 0-based display pixel coordinates."""
        if self.y_flipped:
            return x - 1.0, self.height - y
        return x - 1.0, y - 1.0


def make_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, relax=True, naxis=2)


def world_to_pixel(
    wcs: WCS, ra: np.ndarray, dec: np.ndarray, width: int, height: int, margin: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Sky to pixel (1-based) with SIP, robustly: NaN for points far outside the picture.

    The inverse SIP iteration diverges far from the image, and the tangent plane folds over
    beyond 90 degrees, so points are first screened with the plain TAN projection.
    """
    ra, dec = np.atleast_1d(ra).astype(float), np.atleast_1d(dec).astype(float)
    centre = np.radians(wcs.wcs.crval)
    cos_distance = np.sin(np.radians(dec)) * np.sin(centre[1]) + np.cos(np.radians(dec)) * np.cos(
        centre[1]
    ) * np.cos(np.radians(ra) - centre[0])
    tx, ty = wcs.wcs_world2pix(ra, dec, 1)
    near = (cos_distance > 0.1) & np.isfinite(tx) & np.isfinite(ty)
    near &= (tx > -margin * width) & (tx < (1 + margin) * width)
    near &= (ty > -margin * height) & (ty < (1 + margin) * height)
    px = np.full(ra.shape, np.nan)
    py = np.full(ra.shape, np.nan)
    if near.any():
        x, y = wcs.all_world2pix(ra[near], dec[near], 1, quiet=True)
        px[near], py[near] = x, y
    return px, py


def flip_wcs_y(header: fits.Header, height: int) -> fits.Header:
    """The same solution for the picture flipped top to bottom (y' = H + 1 - y).

    With v' = -v about the new reference pixel, the CD matrix's second column changes sign,
    and each SIP coefficient of v^q picks up (-1)^q (and the B terms one more -1).
    """
    flipped = header.copy()
    flipped["CRPIX2"] = height + 1 - header["CRPIX2"]
    for key in ("CD1_2", "CD2_2"):
        if key in header:
            flipped[key] = -header[key]
    for key in ("PC1_2", "PC2_2"):
        if key in header:
            flipped[key] = -header[key]
    for prefix in SIP_PREFIXES:
        order = header.get(f"{prefix}_ORDER")
        if order is None:
            continue
        for p in range(order + 1):
            for q in range(order + 1 - p):
                key = f"{prefix}_{p}_{q}"
                if key in header:
                    sign = (-1) ** q * (-1 if prefix in ("B", "BP") else 1)
                    flipped[key] = sign * header[key]
    return flipped


def _stretch(data: np.ndarray) -> np.ndarray:
    """FITS values to 8 bits: a linear 0.5-99.5 percentile stretch."""
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
    return (scaled * 255).astype(np.uint8)


def star_list_positions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with fits.open(path) as hdus:
        return np.asarray(hdus[1].data["X"], float), np.asarray(hdus[1].data["Y"], float)


def render_scale(width: int, height: int, max_pixels: int | None) -> float:
    """The factor (at most 1) that brings a width x height picture within max_pixels."""
    if not max_pixels or width * height <= max_pixels:
        return 1.0
    scale = math.sqrt(max_pixels / (width * height))
    # Pictures are sized with round(): step down until the rounded size is within the limit.
    while max(1, round(width * scale)) * max(1, round(height * scale)) > max_pixels:
        scale *= 0.999
    return scale


def base_picture(prepared: PreparedInput, max_pixels: int | None = None) -> PILImage.Image:
    """The upload as a displayable RGB picture in display orientation: at full resolution,
    or, when that is more than ``max_pixels`` (NOVA_MAX_RENDER_PIXELS), reduced while it is
    read (by a whole factor, so still at least as large as any rendering of it needs)."""
    scale = render_scale(prepared.width, prepared.height, max_pixels)
    step = max(1, math.floor(1 / scale))
    if prepared.kind in RASTER_KINDS:
        with PILImage.open(prepared.path) as image:
            if step > 1:
                # JPEG decodes at 1/2, 1/4 or 1/8 directly; others are reduced after decoding.
                image.draft("RGB", (math.ceil(image.width / step), math.ceil(image.height / step)))
                reduce_by = max(1, math.floor(image.width / math.ceil(prepared.width / step)))
                return image.convert("RGB").reduce(reduce_by)
            return image.convert("RGB")
    if prepared.kind == "fits":
        with fits.open(prepared.path) as hdus:
            data = hdus[prepared.fits_extension].data
            while data.ndim > 2:
                data = data[0]
            # Every step-th pixel of a memory-mapped image: only that much is read.
            stretched = _stretch(data[::step, ::step])
        # FITS rows run bottom-up; pictures run top-down.
        return PILImage.fromarray(np.flipud(stretched)).convert("RGB")
    # A star list is drawn at the reduced size directly (it may claim a huge image size).
    size = (max(1, math.ceil(prepared.width * scale)), max(1, math.ceil(prepared.height * scale)))
    picture = PILImage.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(picture)
    xs, ys = star_list_positions(prepared.path)
    radius = max(1.5, max(size) / 400)
    for x, y in zip(xs[:5000], ys[:5000], strict=True):
        # Star lists use FITS coordinates, y up.
        px, py = (x - 1) * scale, (prepared.height - y) * scale
        draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=(255, 255, 255))
    return picture


def display_wcs_header(header: fits.Header, prepared: PreparedInput) -> fits.Header:
    return header if prepared.y_axis_down else flip_wcs_y(header, prepared.height)


def open_field(
    prepared: PreparedInput, solved_header: fits.Header, max_pixels: int | None = None
) -> Field:
    return Field(
        picture=base_picture(prepared, max_pixels),
        header=display_wcs_header(solved_header, prepared),
        width=prepared.width,
        height=prepared.height,
        y_flipped=not prepared.y_axis_down,
    )


def scale_for(size: str, width: int, height: int, max_pixels: int | None = None) -> float:
    """1 for "full" (less when the image has more than max_pixels, NOVA_MAX_RENDER_PIXELS);
    for "display", the factor that brings the longest side to <= 640."""
    limit = render_scale(width, height, max_pixels)
    if size == "full":
        return limit
    return min(1.0, DISPLAY_MAX / max(width, height), limit)


def resized(picture: PILImage.Image, scale: float, field_size: tuple[int, int]) -> PILImage.Image:
    """The picture at ``scale`` times the field's full size (``picture`` may already be
    reduced: see base_picture)."""
    size = (max(1, round(field_size[0] * scale)), max(1, round(field_size[1] * scale)))
    if size == picture.size:
        return picture.copy()
    return picture.resize(size, PILImage.LANCZOS)


def font(size: int, bold: bool = False) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    face = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    for path in (f"/usr/share/fonts/truetype/dejavu/{face}",):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default()


def sniff_is(path: Path, kind: str) -> bool:
    """True when the stored file is that format itself (not, say, gzip-compressed)."""
    return sniff(path) == kind


def save(picture: PILImage.Image, target: Path, fmt: str) -> None:
    if fmt == "JPEG":
        picture.convert("RGB").save(target, format="JPEG", quality=90)
    else:
        picture.save(target, format="PNG")


# -- pictures of an upload -----------------------------------------------------------------


def write_display_image(
    prepared: PreparedInput, target: Path, max_side: int, fmt: str, max_pixels: int | None = None
) -> None:
    picture = base_picture(prepared, max_pixels)
    picture.thumbnail((max_side, max_side), PILImage.LANCZOS)
    save(picture, target, fmt)


# -- pictures of a solution ----------------------------------------------------------------
