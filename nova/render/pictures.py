"""Pictures of uploads and solutions: the image as displayed, annotated, with an RA/Dec grid,
with detected and catalogue stars, the field on the sky, and a KMZ for Google Earth.

Every picture is drawn in *display orientation*: raster images as stored (top row first),
FITS images and star lists with y pointing up, as astronomers view them. The engine numbers
pixels in file order, so for FITS and star lists the solved WCS is flipped in y before it is
used on a displayed picture (``display_wcs_header``).
"""

from __future__ import annotations

import io
import math
import subprocess
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from nova.engine import fieldobjects
from nova.engine.inputs import RASTER_KINDS, PreparedInput, sniff

DISPLAY_MAX = 640  # nova's "display" size: longest side at most 640 px
THUMBNAIL_MAX = 256
SKY_PLOT_SIZE = 256
SKY_PLOT_WIDTHS = {1: 36.0, 2: 3.6, 3: 0.36}  # degrees across zoom1..3
# What each zoom shows: constellations and the brightest named stars when wide, then
# named stars and NGC/IC objects closer in (all labels would crowd a 256-pixel plot).
ZOOM_LAYERS = {1: ("-C",), 2: ("-C", "-B", "-c", "-N"), 3: ("-B", "-N")}
GRID_STEPS = (0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60)
SIP_PREFIXES = ("A", "B", "AP", "BP")
KML_NS = "http://www.opengis.net/kml/2.2"
KML_GX_NS = "http://www.google.com/kml/ext/2.2"


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


@dataclass(frozen=True)
class DrawnLabel:
    """A label the annotated picture shows: which object, the marker's pixel and the
    text's box (0-based pixels of the picture as drawn, after scaling)."""

    mark: fieldobjects.Mark
    x: float
    y: float
    box: tuple[float, float, float, float]  # left, top, right, bottom


ANNOTATION_COLOURS = {
    "constellation": (200, 170, 235),
    "star": (235, 215, 255),
    "ngc": (150, 215, 255),
}
CONSTELLATION_LINE_COLOUR = (175, 120, 215)
LABEL_OUTLINE = (0, 0, 0)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)


def _place_label(
    box_size: tuple[float, float],
    x: float,
    y: float,
    gap: float,
    centred: bool,
    picture_size: tuple[int, int],
    taken: list[tuple[float, float, float, float]],
) -> tuple[float, float, float, float]:
    """Where a label goes: the first of a few places beside its marker (on it, for a
    constellation) that lies inside the picture and clear of the labels and markers placed
    so far; else the one overlapping them least. Always inside the picture (when it fits)."""
    w, h = box_size
    spots = [(x - w / 2, y - h / 2)] if centred else []
    for reach in (gap, gap + 1.5 * h):  # beside the marker, then a little farther out
        spots += [(x + reach, y - h / 2), (x - reach - w, y - h / 2), (x - w / 2, y - reach - h)]
        spots += [(x - w / 2, y + reach), (x + reach, y - reach - h), (x + reach, y + reach)]
        spots += [(x - reach - w, y - reach - h), (x - reach - w, y + reach)]
    best: tuple[float, tuple[float, float, float, float]] | None = None
    for left, top in spots:
        left = min(max(0.0, left), max(0.0, picture_size[0] - w))
        top = min(max(0.0, top), max(0.0, picture_size[1] - h))
        box = (left, top, left + w, top + h)
        crowding = sum(_overlap(box, other) for other in taken)
        if crowding == 0:
            return box
        if best is None or crowding < best[0]:
            best = (crowding, box)
    assert best is not None
    return best[1]


def write_annotated(
    field: Field, scale: float, target: Path, objects: fieldobjects.FieldObjects
) -> list[DrawnLabel]:
    """The picture with what ``objects`` lists (``fieldobjects``, the home of what is in the
    field, so the picture names exactly what objects_in_field and annotations do): the lines
    of the constellations crossing it, the listed constellations' names amid their stars,
    the listed bright stars (a ring on each, with its name) and NGC/IC objects (a circle
    their size). Drawn with Pillow straight onto the picture (no second copy of it), labels
    outlined so that they read on any sky, kept inside the picture and clear of each other.
    Returns the labels drawn and where."""
    picture = resized(field.picture, scale, (field.width, field.height))
    draw = ImageDraw.Draw(picture)
    longest = max(picture.width, picture.height)
    text_size = max(11, round(longest / 60))
    label_font = font(text_size, bold=True)
    line_width = max(1, round(longest / 500))
    ring = max(4.0, text_size * 0.45)
    # Positions of this picture's pixel centres: the field's, moved to the display and scaled.
    scale_x = picture.width / field.width
    scale_y = picture.height / field.height

    def to_picture(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = field.engine_to_display(np.asarray(x, float), np.asarray(y, float))
        return (dx + 0.5) * scale_x - 0.5, (dy + 0.5) * scale_y - 0.5

    for polyline in objects.constellation_lines:
        px, py = to_picture(polyline[:, 0], polyline[:, 1])
        piece: list[tuple[float, float]] = []
        for x, y in [*zip(px, py, strict=True), (math.nan, math.nan)]:
            if math.isfinite(x) and math.isfinite(y):
                piece.append((float(x), float(y)))
                continue
            if len(piece) > 1:
                draw.line(piece, fill=CONSTELLATION_LINE_COLOUR, width=line_width)
            piece = []
    placed: list[tuple[fieldobjects.Mark, float, float, float]] = []
    for mark in objects.marks:
        (x,), (y,) = to_picture(np.array([mark.x]), np.array([mark.y]))
        colour = ANNOTATION_COLOURS[mark.kind]
        if mark.kind == "star":
            draw.ellipse(
                (x - ring, y - ring, x + ring, y + ring), outline=colour, width=line_width + 1
            )
            dot = max(1.5, ring / 3)
            draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=colour)
            reach = ring
        elif mark.kind == "ngc":
            reach = max(ring, mark.radius * (scale_x + scale_y) / 2)
            draw.ellipse(
                (x - reach, y - reach, x + reach, y + reach), outline=colour, width=line_width + 1
            )
        else:
            reach = 0.0
        placed.append((mark, float(x), float(y), reach))
    # Labels after every marker, so that none is placed over a marker drawn later (a large
    # NGC circle excepted: its labels may sit inside it).
    taken = [(x - r, y - r, x + r, y + r) for mark, x, y, r in placed if 0 < r <= 3 * ring]
    drawn = []
    outline = max(1, round(text_size / 8))
    for mark, x, y, reach in placed:
        left, top, right, bottom = draw.textbbox(
            (0, 0), mark.label, font=label_font, stroke_width=outline
        )
        box = _place_label(
            (right - left, bottom - top),
            x,
            y,
            reach + text_size * 0.3,
            mark.kind == "constellation",
            picture.size,
            taken,
        )
        draw.text(
            (box[0] - left, box[1] - top),
            mark.label,
            font=label_font,
            fill=ANNOTATION_COLOURS[mark.kind],
            stroke_width=outline,
            stroke_fill=LABEL_OUTLINE,
        )
        taken.append(box)
        drawn.append(DrawnLabel(mark, x, y, box))
    save(picture, target, "JPEG")
    return drawn


def grid_step(radius: float) -> float:
    """nova's label step: the candidate closest in log to the field radius."""
    return min(GRID_STEPS, key=lambda step: abs(math.log(step) - math.log(radius)))


def _field_bounds(field: Field) -> tuple[float, float, float, float]:
    """RA range (unwrapped around the centre) and Dec range covered by the picture."""
    wcs = field.wcs()
    xs = np.linspace(0.5, field.width + 0.5, 25)
    ys = np.linspace(0.5, field.height + 0.5, 25)
    gx, gy = np.meshgrid(xs, ys)
    ra, dec = wcs.all_pix2world(gx.ravel(), gy.ravel(), 1)
    centre_ra = float(wcs.all_pix2world([[field.width / 2 + 0.5, field.height / 2 + 0.5]], 1)[0][0])
    ra = (ra - centre_ra + 180) % 360 - 180 + centre_ra
    dec_low, dec_high = float(np.nanmin(dec)), float(np.nanmax(dec))
    for pole in (90.0, -90.0):  # a pole inside the picture: every RA is there
        px, py = (
            float(v[0])
            for v in world_to_pixel(
                wcs, np.array([0.0]), np.array([pole]), field.width, field.height
            )
        )
        if 0.5 <= px <= field.width + 0.5 and 0.5 <= py <= field.height + 0.5:
            return 0.0, 360.0, min(dec_low, pole), max(dec_high, pole)
    return float(np.nanmin(ra)), float(np.nanmax(ra)), dec_low, dec_high


def write_grid(field: Field, scale: float, radius: float, target: Path) -> None:
    """The picture with an RA/Dec grid, labelled, plus a fainter half-step grid."""
    picture = resized(field.picture, scale, (field.width, field.height)).convert("RGBA")
    overlay = PILImage.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    wcs = field.wcs()
    ra_low, ra_high, dec_low, dec_high = _field_bounds(field)
    centre_dec = (dec_low + dec_high) / 2
    dec_step = grid_step(radius)
    if (dec_high - dec_low) / dec_step < 2:  # fewer than 2 labels would show: step down
        dec_step = GRID_STEPS[max(0, GRID_STEPS.index(dec_step) - 1)]
    ra_step = grid_step(min(180.0, dec_step / max(math.cos(math.radians(centre_dec)), 0.05)))
    label_font = font(max(10, round(12 * max(picture.size) / 640)))

    def draw_line(
        ras: np.ndarray, decs: np.ndarray, colour: tuple[int, ...], width: int, label: str | None
    ) -> None:
        px, py = world_to_pixel(wcs, ras, decs, field.width, field.height)
        px, py = (px - 0.5) * scale, (py - 0.5) * scale
        with np.errstate(invalid="ignore"):
            inside = (px >= 0) & (px <= picture.width) & (py >= 0) & (py <= picture.height)
        points = [
            (float(x), float(y)) if ok else None for x, y, ok in zip(px, py, inside, strict=True)
        ]
        segment: list[tuple[float, float]] = []
        for point in points + [None]:
            if point is None:
                if len(segment) > 1:
                    draw.line(segment, fill=colour, width=width)
                segment = []
            else:
                segment.append(point)
        if label and inside.any():
            first = int(np.argmax(inside))
            draw.text(
                (float(px[first]) + 3, float(py[first]) + 3),
                label,
                font=label_font,
                fill=(255, 255, 160, 255),
            )

    for step, colour, width, labelled in (
        (dec_step / 2, (120, 200, 255, 70), 1, False),
        (dec_step, (120, 200, 255, 170), 1, True),
    ):
        for dec in np.arange(math.floor(dec_low / step) * step, dec_high + step, step):
            if abs(dec) > 90:
                continue
            ras = np.linspace(ra_low - ra_step, ra_high + ra_step, 400)
            draw_line(
                ras % 360, np.full_like(ras, dec), colour, width, f"{dec:+g}°" if labelled else None
            )
    for step, colour, width, labelled in (
        (ra_step / 2, (255, 200, 120, 70), 1, False),
        (ra_step, (255, 200, 120, 170), 1, True),
    ):
        for ra in np.arange(math.floor(ra_low / step) * step, ra_high + step, step):
            decs = np.linspace(max(-90, dec_low - dec_step), min(90, dec_high + dec_step), 400)
            draw_line(
                np.full_like(decs, ra % 360),
                decs,
                colour,
                width,
                f"{ra % 360:g}°" if labelled else None,
            )
    save(PILImage.alpha_composite(picture, overlay), target, "JPEG")


def _circles(
    draw: ImageDraw.ImageDraw,
    xs: Sequence[float],
    ys: Sequence[float],
    radius: float,
    colour: tuple[int, ...],
    width: int,
) -> None:
    for x, y in zip(xs, ys, strict=True):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=width)


def write_red_green(
    field: Field,
    scale: float,
    sources: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    target: Path,
) -> None:
    """Detected sources (first 200) in red, catalogue stars in green (nova's red-green)."""
    picture = resized(field.picture, scale, (field.width, field.height))
    draw = ImageDraw.Draw(picture)
    sx, sy = field.engine_to_display(sources[0][:200], sources[1][:200])
    _circles(draw, sx * scale, sy * scale, 6, (255, 0, 0), 2)
    ra, dec = reference
    if len(ra):
        # Catalogue stars through the engine's own WCS, then to the display.
        engine_header = flip_wcs_y(field.header, field.height) if field.y_flipped else field.header
        ex, ey = world_to_pixel(make_wcs(engine_header), ra, dec, field.width, field.height)
        gx, gy = field.engine_to_display(ex, ey)
        _circles(draw, gx * scale, gy * scale, 4, (0, 255, 0), 2)
    save(picture, target, "PNG")


def write_extraction(
    field: Field, scale: float, sources: tuple[np.ndarray, np.ndarray], target: Path
) -> None:
    """Detected sources as red circles: 0-49 bold, 50-249 fainter, 250-499 faintest."""
    picture = resized(field.picture, scale, (field.width, field.height)).convert("RGBA")
    overlay = PILImage.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    xs, ys = field.engine_to_display(*sources)
    for start, stop, alpha, width in ((0, 50, 255, 2), (50, 250, 230, 1), (250, 500, 128, 1)):
        _circles(draw, xs[start:stop] * scale, ys[start:stop] * scale, 6, (255, 0, 0, alpha), width)
    save(PILImage.alpha_composite(picture, overlay).convert("RGB"), target, "PNG")


def field_outline(header: fits.Header, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec of points along the image border (closed loop)."""
    n = 20
    xs = np.concatenate(
        [
            np.linspace(0.5, width + 0.5, n),
            np.full(n, width + 0.5),
            np.linspace(width + 0.5, 0.5, n),
            np.full(n, 0.5),
        ]
    )
    ys = np.concatenate(
        [
            np.full(n, 0.5),
            np.linspace(0.5, height + 0.5, n),
            np.full(n, height + 0.5),
            np.linspace(height + 0.5, 0.5, n),
        ]
    )
    return make_wcs(header).all_pix2world(xs, ys, 1)


def _aitoff(ra: np.ndarray, dec: np.ndarray, centre_ra: float) -> tuple[np.ndarray, np.ndarray]:
    """Aitoff projection to [-1, 1] x [-0.5, 0.5] centred on ``centre_ra``, RA increasing to
    the left (the sky seen from inside)."""
    lon = np.radians(((ra - centre_ra + 180) % 360) - 180)
    lat = np.radians(dec)
    alpha = np.arccos(np.cos(lat) * np.cos(lon / 2))
    sinc = np.where(alpha == 0, 1.0, np.sin(alpha) / np.where(alpha == 0, 1.0, alpha))
    x = 2 * np.cos(lat) * np.sin(lon / 2) / sinc
    y = np.sin(lat) / sinc
    return -x / math.pi, y / math.pi


def write_sky_plot_whole_sky(
    outline: tuple[np.ndarray, np.ndarray], ra: float, dec: float, target: Path
) -> None:
    size = SKY_PLOT_SIZE
    picture = PILImage.new("RGB", (size, size), (10, 14, 30))
    draw = ImageDraw.Draw(picture)
    reach = size / 2 - 4  # half the width of the ellipse; it is half as tall

    def to_px(ra_values: np.ndarray, dec_values: np.ndarray) -> list[tuple[float, float]]:
        # Centred on the field, so a field never straddles the map's edge.
        x, y = _aitoff(ra_values, dec_values, ra)
        return [(size / 2 + a * reach, size / 2 - b * reach) for a, b in zip(x, y, strict=True)]

    for offset in range(-150, 181, 30):
        decs = np.linspace(-90, 90, 60)
        draw.line(to_px(np.full(60, ra + offset - 0.001), decs), fill=(50, 60, 90))
    for grid_dec in range(-60, 90, 30):
        ras = ra + np.linspace(-179.9, 179.9, 90)
        draw.line(to_px(ras, np.full(90, grid_dec)), fill=(50, 60, 90))
    edge = np.linspace(-90, 90, 90)
    border = to_px(np.full(90, ra + 179.999), edge) + to_px(np.full(90, ra - 179.999), edge[::-1])
    draw.line(border + [border[0]], fill=(120, 130, 170))
    draw.polygon(to_px(*outline), outline=(255, 60, 60), fill=(255, 60, 60))
    ((mx, my),) = to_px(np.array([ra]), np.array([dec]))
    draw.ellipse((mx - 6, my - 6, mx + 6, my + 6), outline=(255, 60, 60), width=2)
    picture.save(target, format="PNG")


def write_sky_plot_zoom(
    zoom: int,
    outline: tuple[np.ndarray, np.ndarray],
    ra: float,
    dec: float,
    target: Path,
    work_dir: Path,
) -> None:
    """A 256x256 view, 36/3.6/0.36 degrees wide, with constellations and stars, and the field."""
    size = SKY_PLOT_SIZE
    scale = SKY_PLOT_WIDTHS[zoom] / size
    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN",
        CTYPE2="DEC--TAN",
        CRVAL1=ra,
        CRVAL2=dec,
        CRPIX1=size / 2 + 0.5,
        CRPIX2=size / 2 + 0.5,
        CD1_1=-scale,
        CD1_2=0.0,
        CD2_1=0.0,
        CD2_2=-scale,
        IMAGEW=size,
        IMAGEH=size,
    )
    # CD2_2 < 0: with rows drawn top-down, north is up and east is left, as on the sky.
    wcs_path = work_dir / f"zoom{zoom}.wcs"
    fits.PrimaryHDU(header=header).writeto(wcs_path, overwrite=True)
    png = work_dir / f"zoom{zoom}.png"
    size_args = ["-W", str(size), "-H", str(size)]
    command = ["plot-constellations", "-w", str(wcs_path), *size_args, "-o", str(png)]
    command += [*ZOOM_LAYERS[zoom], "-j", "-f", "10"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    with PILImage.open(png) as plotted:
        picture = plotted.convert("RGB")
    draw = ImageDraw.Draw(picture)
    ox, oy = make_wcs(header).all_world2pix(*outline, 1)
    points = [
        (float(x) - 0.5, float(y) - 0.5)
        for x, y in zip(ox, oy, strict=True)
        if np.isfinite(x) and np.isfinite(y)
    ]
    if len(points) > 2:
        draw.line(points + [points[0]], fill=(255, 60, 60), width=2)
    picture.save(target, format="PNG")


def write_kmz(field: Field, target: Path, name: str) -> None:
    """A KMZ for Google Earth's sky mode: the picture as a ground overlay on its four corners."""
    picture = resized(
        field.picture,
        min(1.0, scale_for("display", field.width, field.height) * 2),
        (field.width, field.height),
    )
    wcs = field.wcs()
    # Display corners, counter-clockwise from the lower left, as gx:LatLonQuad wants them.
    w, h = field.width + 0.5, field.height + 0.5
    corners_px = [(0.5, h), (w, h), (w, 0.5), (0.5, 0.5)]
    ra, dec = wcs.all_pix2world([c[0] for c in corners_px], [c[1] for c in corners_px], 1)
    coordinates = " ".join(f"{r - 180:.8f},{d:.8f}" for r, d in zip(ra, dec, strict=True))
    kml = f"""<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="{KML_NS}" xmlns:gx="{KML_GX_NS}" hint="target=sky">
  <Document>
    <name>{escape(name)}</name>
    <GroundOverlay>
      <name>{escape(name)}</name>
      <Icon><href>image.jpg</href></Icon>
      <gx:LatLonQuad><coordinates>{coordinates}</coordinates></gx:LatLonQuad>
    </GroundOverlay>
  </Document>
</kml>
"""
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=90)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as kmz:
        kmz.writestr("doc.kml", kml)
        kmz.writestr("image.jpg", buffer.getvalue())
