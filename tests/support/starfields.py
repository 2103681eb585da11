"""Synthetic star lists of a known sky: a time series as a tracking camera would see it.

Stars come from the Tycho-2 index files themselves (``query-starkd``), projected through a
known TAN solution (the truth), brightest first, with a little positional noise. Each frame
of a sequence drifts by a few pixels and turns slowly, as a mount's tracking error does.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

INDEX_DIR = Path("/usr/share/astrometry")
# The densest Tycho-2 index (about 45 stars per square degree): every coarser index's stars
# are among them.
CATALOGUE = INDEX_DIR / "index-tycho2-07.littleendian.fits"


@dataclass(frozen=True)
class Frame:
    name: str
    data: bytes  # the star list as text, "x y" per line, brightest first
    truth: WCS | None  # None: a frame of noise, with no solution


def catalogue_stars(ra: float, dec: float, radius: float) -> tuple[np.ndarray, ...]:
    """(ra, dec, magnitude) of the catalogue's stars within ``radius`` degrees."""
    with tempfile.TemporaryDirectory() as scratch:
        table = Path(scratch) / "stars.fits"
        subprocess.run(
            ["query-starkd", "-r", repr(ra), "-d", repr(dec), "-R", repr(radius), "-T",
             "-o", str(table), str(CATALOGUE)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        with fits.open(table) as hdus:
            data = hdus[1].data
            return (
                np.asarray(data["RA"], dtype=float),
                np.asarray(data["DEC"], dtype=float),
                np.asarray(data["MAG_VT"], dtype=float),
            )


def tan_wcs(
    ra: float,
    dec: float,
    *,
    width: int,
    height: int,
    pixscale: float,
    rotation: float = 0.0,
    crpix: tuple[float, float] | None = None,
) -> WCS:
    """A TAN solution: ``pixscale`` arcsec/px, north turned ``rotation`` degrees, east left."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = list(crpix or (0.5 + width / 2, 0.5 + height / 2))
    scale = pixscale / 3600.0
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    wcs.wcs.cd = [[-scale * cos, scale * sin], [scale * sin, scale * cos]]
    return wcs


def render(
    truth: WCS,
    stars: tuple[np.ndarray, ...],
    *,
    width: int,
    height: int,
    noise: float,
    rng: np.random.Generator,
    limit: int = 300,
) -> bytes:
    """The stars inside the frame as text "x y" (FITS pixels, 1-based), brightest first."""
    ra, dec, mag = stars
    x, y = truth.all_world2pix(ra, dec, 1)
    inside = (x >= 0.5) & (x <= width + 0.5) & (y >= 0.5) & (y <= height + 0.5)
    order = np.argsort(mag[inside], kind="stable")[:limit]
    xs = x[inside][order] + rng.normal(0.0, noise, len(order))
    ys = y[inside][order] + rng.normal(0.0, noise, len(order))
    return "".join(f"{a:.3f} {b:.3f}\n" for a, b in zip(xs, ys, strict=True)).encode()


def sequence(
    count: int,
    *,
    ra: float = 100.2,
    dec: float = 9.8,
    width: int = 1024,
    height: int = 768,
    field_degrees: float = 2.0,
    drift: tuple[float, float] = (1.6, 1.2),
    turn: float = 0.01,
    noise: float = 0.1,
    seed: int = 17,
    prefix: str = "frame",
) -> list[Frame]:
    """``count`` frames of one field; frame k is shifted by k x ``drift`` pixels and turned
    by k x ``turn`` degrees."""
    rng = np.random.default_rng(seed)
    pixscale = field_degrees * 3600.0 / width
    reach = field_degrees * 0.75 + count * math.hypot(*drift) * pixscale / 3600.0
    stars = catalogue_stars(ra, dec, reach)
    frames = []
    for k in range(count):
        truth = tan_wcs(
            ra,
            dec,
            width=width,
            height=height,
            pixscale=pixscale,
            rotation=k * turn,
            crpix=(0.5 + width / 2 + k * drift[0], 0.5 + height / 2 + k * drift[1]),
        )
        data = render(truth, stars, width=width, height=height, noise=noise, rng=rng)
        frames.append(Frame(f"{prefix}{k:04d}.txt", data, truth))
    return frames


def noise_frame(name: str, *, width: int = 1024, height: int = 768, seed: int = 5) -> Frame:
    """Random positions: a frame of clouds and hot pixels that no sky matches."""
    rng = np.random.default_rng(seed)
    xs, ys = rng.uniform(1, width, 150), rng.uniform(1, height, 150)
    text = "".join(f"{a:.3f} {b:.3f}\n" for a, b in zip(xs, ys, strict=True))
    return Frame(name, text.encode(), None)


def pixel_error(solved_header: fits.Header, truth: WCS, width: int, height: int) -> float:
    """Largest distance in pixels, over a grid across the frame, between where the solution
    and the truth put the same sky position."""
    solved = WCS(solved_header, relax=True, naxis=2)
    gx, gy = np.meshgrid(np.linspace(1, width, 9), np.linspace(1, height, 7))
    ra, dec = solved.all_pix2world(gx.ravel(), gy.ravel(), 1)
    tx, ty = truth.all_world2pix(ra, dec, 1)
    return float(np.hypot(tx - gx.ravel(), ty - gy.ravel()).max())


def write_frames(frames: Sequence[Frame], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame in frames:
        path = directory / frame.name
        path.write_bytes(frame.data)
        paths.append(path)
    return paths
