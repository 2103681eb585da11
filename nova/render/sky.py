"""The field on the sky: its outline, sky plots (whole sky and zoomed) and a KMZ for Google
Earth."""

from __future__ import annotations

import io
import math
import subprocess
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from astropy.io import fits
from PIL import Image as PILImage
from PIL import ImageDraw

from nova.render.pictures import Field, make_wcs, resized, scale_for

SKY_PLOT_SIZE = 256
SKY_PLOT_WIDTHS = {1: 36.0, 2: 3.6, 3: 0.36}  # degrees across zoom1..3
# What each zoom shows: constellations and the brightest named stars when wide, then
# named stars and NGC/IC objects closer in (all labels would crowd a 256-pixel plot).
ZOOM_LAYERS = {1: ("-C",), 2: ("-C", "-B", "-c", "-N"), 3: ("-B", "-N")}
KML_NS = "http://www.opengis.net/kml/2.2"
KML_GX_NS = "http://www.google.com/kml/ext/2.2"


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
