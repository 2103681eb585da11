"""What is drawn over a solved field: the annotated picture (named objects, constellation
lines), the RA/Dec grid, detected and catalogue stars (red-green) and the extraction picture.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from nova.engine import fieldobjects
from nova.render.pictures import Field, flip_wcs_y, font, make_wcs, resized, save, world_to_pixel

GRID_STEPS = (0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60)


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
    line_width = max(1, round(longest / 500))
    ring = max(4.0, text_size * 0.45)
    # Positions of this picture's pixel centres: the field's, moved to the display and scaled.
    scale_x = picture.width / field.width
    scale_y = picture.height / field.height

    def to_picture(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = field.engine_to_display(np.asarray(x, float), np.asarray(y, float))
        return (dx + 0.5) * scale_x - 0.5, (dy + 0.5) * scale_y - 0.5

    for polyline in objects.constellation_lines:
        _draw_polyline(draw, *to_picture(polyline[:, 0], polyline[:, 1]), line_width)
    placed = [
        _draw_marker(draw, mark, to_picture, ring, line_width, scale_x + scale_y)
        for mark in objects.marks
    ]
    drawn = _draw_labels(draw, placed, picture.size, text_size, ring)
    save(picture, target, "JPEG")
    return drawn


def _draw_polyline(draw: ImageDraw.ImageDraw, px: np.ndarray, py: np.ndarray, width: int) -> None:
    """A constellation line, broken where a point is not on the picture's sky (NaN)."""
    piece: list[tuple[float, float]] = []
    for x, y in [*zip(px, py, strict=True), (math.nan, math.nan)]:
        if math.isfinite(x) and math.isfinite(y):
            piece.append((float(x), float(y)))
            continue
        if len(piece) > 1:
            draw.line(piece, fill=CONSTELLATION_LINE_COLOUR, width=width)
        piece = []


# A marker drawn: its object, its position on the picture and how far the marker reaches.
PlacedMark = tuple[fieldobjects.Mark, float, float, float]


def _draw_marker(
    draw: ImageDraw.ImageDraw,
    mark: fieldobjects.Mark,
    to_picture: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    ring: float,
    line_width: int,
    scale_sum: float,  # the picture's x and y scales added (their mean, doubled)
) -> PlacedMark:
    """A ring and a dot on a star, a circle its size on an NGC/IC object, nothing on a
    constellation (its name goes amid its stars)."""
    (x,), (y,) = to_picture(np.array([mark.x]), np.array([mark.y]))
    colour = ANNOTATION_COLOURS[mark.kind]
    if mark.kind == "star":
        draw.ellipse((x - ring, y - ring, x + ring, y + ring), outline=colour, width=line_width + 1)
        dot = max(1.5, ring / 3)
        draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=colour)
        reach = ring
    elif mark.kind == "ngc":
        reach = max(ring, mark.radius * scale_sum / 2)
        draw.ellipse(
            (x - reach, y - reach, x + reach, y + reach), outline=colour, width=line_width + 1
        )
    else:
        reach = 0.0
    return mark, float(x), float(y), reach


def _draw_labels(
    draw: ImageDraw.ImageDraw,
    placed: list[PlacedMark],
    picture_size: tuple[int, int],
    text_size: int,
    ring: float,
) -> list[DrawnLabel]:
    """Every marker's label, outlined, placed clear of the labels and markers so far."""
    # Labels after every marker, so that none is placed over a marker drawn later (a large
    # NGC circle excepted: its labels may sit inside it).
    taken = [(x - r, y - r, x + r, y + r) for mark, x, y, r in placed if 0 < r <= 3 * ring]
    label_font = font(text_size, bold=True)
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
            picture_size,
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

    for line in _grid_lines((ra_low, ra_high, dec_low, dec_high), ra_step, dec_step):
        draw_line(*line)
    save(PILImage.alpha_composite(picture, overlay), target, "JPEG")


GridLine = tuple[np.ndarray, np.ndarray, tuple[int, ...], int, str | None]


def _grid_lines(
    bounds: tuple[float, float, float, float], ra_step: float, dec_step: float
) -> Iterator[GridLine]:
    """The grid's lines over ``bounds`` (RA low, high, Dec low, high): RA, Dec, colour, width
    and label of each; Dec lines first, each step's faint half-step lines before it."""
    ra_low, ra_high, dec_low, dec_high = bounds
    for step, colour, width, labelled in (
        (dec_step / 2, (120, 200, 255, 70), 1, False),
        (dec_step, (120, 200, 255, 170), 1, True),
    ):
        for dec in np.arange(math.floor(dec_low / step) * step, dec_high + step, step):
            if abs(dec) > 90:
                continue
            ras = np.linspace(ra_low - ra_step, ra_high + ra_step, 400)
            yield (
                ras % 360,
                np.full_like(ras, dec),
                colour,
                width,
                (f"{dec:+g}°" if labelled else None),
            )
    for step, colour, width, labelled in (
        (ra_step / 2, (255, 200, 120, 70), 1, False),
        (ra_step, (255, 200, 120, 170), 1, True),
    ):
        for ra in np.arange(math.floor(ra_low / step) * step, ra_high + step, step):
            decs = np.linspace(max(-90, dec_low - dec_step), min(90, dec_high + dec_step), 400)
            yield (
                np.full_like(decs, ra % 360),
                decs,
                colour,
                width,
                (f"{ra % 360:g}°" if labelled else None),
            )


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
