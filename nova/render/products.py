"""Products of a job and pictures of an upload, each built once and then served from its file.

A product is built on its first request behind a per-file lock, so two requests never build
it twice, and written under a temporary name then renamed, so nobody sees half a file. Job
products live in the job's directory (published whole by the worker); pictures of an upload
live in the cache directory.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import FITSFixedWarning

from nova.engine import fieldobjects
from nova.engine.input_formats import RASTER_KINDS, PreparedInput
from nova.engine.job_files import AXY_NAME, RDLS_NAME, WCS_NAME
from nova.render import overlays, pictures, sky

# Cards that describe a WCS: removed from an uploaded FITS header before the solution goes in.
OLD_WCS_CARD = re.compile(
    r"^(WCSAXES|CTYPE\d|CUNIT\d|CRVAL\d|CRPIX\d|CDELT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|"
    r"PS\d_\d+|LONPOLE|LATPOLE|EQUINOX|EPOCH|RADESYS[A-Z]?|RADECSYS|MJDREF|"
    r"[AB]P?_ORDER|[AB]P?_\d+_\d+|A_DMAX|B_DMAX|IMAGEW|IMAGEH)$"
)
STRUCTURAL_CARDS = {
    "SIMPLE",
    "BITPIX",
    "NAXIS",
    "NAXIS1",
    "NAXIS2",
    "NAXIS3",
    "EXTEND",
    "XTENSION",
    "PCOUNT",
    "GCOUNT",
    "BSCALE",
    "BZERO",
    "COMMENT",
    "HISTORY",
    "DATE",
    "",
}


class ProductUnavailable(Exception):
    """This job has no such product (e.g. it did not solve); the message says why."""


@dataclass(frozen=True)
class JobFacts:
    """What products read of a job and its image, as plain values: the caller loads them
    (render reads no database and no settings)."""

    job_id: int
    image_kind: str
    image_name: str | None  # the upload's original file name
    radius: float | None  # the calibration's radius in degrees; None when not solved
    max_pixels: int | None  # NOVA_MAX_RENDER_PIXELS: larger images are drawn downscaled


@dataclass(eq=False)  # eq=False: compared and hashed by identity, as one job's context
class JobContext:
    """What builders read, loaded lazily: most products need only part of it."""

    facts: JobFacts
    job_dir: Path
    prepare: Callable[[], PreparedInput]  # reads the upload again: called once, by ``prepared``
    work_dir: Path

    @property
    def max_pixels(self) -> int | None:
        return self.facts.max_pixels

    @cached_property
    def prepared(self) -> PreparedInput:
        return self.prepare()

    @cached_property
    def solved_header(self) -> fits.Header:
        with fits.open(self.job_dir / WCS_NAME) as hdus:
            return hdus[0].header.copy()

    @cached_property
    def field_objects(self) -> fieldobjects.FieldObjects:
        """What is in the field, from the one place that lists it for the API too."""
        return fieldobjects.field_objects(self.job_dir, WCS_NAME)

    @cached_property
    def field(self) -> pictures.Field:
        return pictures.open_field(self.prepared, self.solved_header, self.max_pixels)

    def sources(self) -> tuple[np.ndarray, np.ndarray]:
        """Detected sources (engine pixel coordinates), brightest first, from job.axy."""
        with fits.open(self.job_dir / AXY_NAME) as hdus:
            data = hdus[1].data
            return np.asarray(data["X"], float), np.asarray(data["Y"], float)

    def reference_stars(self) -> tuple[np.ndarray, np.ndarray]:
        with fits.open(self.job_dir / RDLS_NAME) as hdus:
            data = hdus[1].data
            return np.asarray(data["RA"], float), np.asarray(data["DEC"], float)

    def scale(self, size: str) -> float:
        return pictures.scale_for(size, self.prepared.width, self.prepared.height, self.max_pixels)


@dataclass(frozen=True)
class Product:
    filename: str
    mimetype: str
    build: Callable[[JobContext, Path], None]
    download_name: str | None = None  # sent as an attachment when set
    needs_solution: bool = True
    needs_pixels: bool = False


def build_new_fits(ctx: JobContext, target: Path) -> None:
    """The uploaded image as FITS with the solved WCS (SIP included), old WCS cards removed.

    Raster rows are written in file order, as the engine numbered them, so the solution
    applies unchanged (the FITS then shows the picture upside down, as nova's does).
    """
    prepared = ctx.prepared
    if prepared.kind == "fits":
        with fits.open(prepared.path) as hdus:
            hdu = hdus[prepared.fits_extension]
            pixels, header = np.asarray(hdu.data), hdu.header.copy()
    else:
        with pictures.PILImage.open(prepared.path) as image:
            if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA"):
                pixels = np.moveaxis(np.asarray(image.convert("RGB")), -1, 0)  # (3, H, W)
            else:
                pixels = np.asarray(image)
        header = fits.Header()
    for key in list(header.keys()):
        if OLD_WCS_CARD.match(key):
            del header[key]
    for card in ctx.solved_header.cards:
        if card.keyword not in STRUCTURAL_CARDS:
            header[card.keyword] = (card.value, card.comment)
    if pixels.dtype == np.uint16:  # FITS has no unsigned 16-bit type but an offset convention
        hdu = fits.PrimaryHDU(data=pixels.astype(np.int32) - 32768, header=header)
        hdu.scale("int16", bzero=32768)
    else:
        hdu = fits.PrimaryHDU(data=pixels, header=header)
    hdu.writeto(target)


def build_image_radec(ctx: JobContext, target: Path) -> None:
    """Every detected source (all columns of job.axy) with its RA/Dec from the full solution."""
    with fits.open(ctx.job_dir / AXY_NAME) as hdus:
        table = hdus[1]
        x, y = ctx.sources()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            # Source positions in .axy files are FITS pixel coordinates (first pixel = 1).
            ra, dec = pictures.make_wcs(ctx.solved_header).all_pix2world(x, y, 1)
        columns = list(table.columns) + [
            fits.Column(name="RA", format="D", unit="deg", array=ra),
            fits.Column(name="DEC", format="D", unit="deg", array=dec),
        ]
        fits.BinTableHDU.from_columns(columns).writeto(target)


def _calibration_radius(ctx: JobContext) -> float:
    assert ctx.facts.radius is not None
    return ctx.facts.radius


def _picture_products() -> dict[str, Product]:
    products: dict[str, Product] = {}
    for size in ("full", "display"):
        products[f"annotated_{size}"] = Product(
            f"annotated-{size}.jpg",
            "image/jpeg",
            build=lambda ctx, t, s=size: overlays.write_annotated(
                ctx.field, ctx.scale(s), t, ctx.field_objects
            ),
        )
        products[f"grid_{size}"] = Product(
            f"grid-{size}.jpg",
            "image/jpeg",
            build=lambda ctx, t, s=size: overlays.write_grid(
                ctx.field, ctx.scale(s), _calibration_radius(ctx), t
            ),
        )
        products[f"red_green_image_{size}"] = Product(
            f"red-green-{size}.png",
            "image/png",
            build=lambda ctx, t, s=size: overlays.write_red_green(
                ctx.field, ctx.scale(s), ctx.sources(), ctx.reference_stars(), t
            ),
        )
        products[f"extraction_image_{size}"] = Product(
            f"extraction-{size}.png",
            "image/png",
            needs_solution=False,
            build=lambda ctx, t, s=size: overlays.write_extraction(
                pictures.Field(
                    pictures.base_picture(ctx.prepared, ctx.max_pixels),
                    fits.Header(),
                    ctx.prepared.width,
                    ctx.prepared.height,
                    not ctx.prepared.y_axis_down,
                ),
                ctx.scale(s),
                ctx.sources(),
                t,
            ),
        )
    return products


JOB_PRODUCTS: dict[str, Product] = {
    "new_fits_file": Product(
        "new-image.fits",
        "application/fits",
        build_new_fits,
        download_name="new-image.fits",
        needs_pixels=True,
    ),
    "image_rd_file": Product(
        "image-radec.fits", "application/fits", build_image_radec, download_name="image-radec.fits"
    ),
    "kml_file": Product(
        "field.kmz",
        "application/vnd.google-earth.kmz",
        lambda ctx, t: sky.write_kmz(ctx.field, t, ctx.facts.image_name or "Nova field"),
        download_name="field.kmz",
    ),
    **_picture_products(),
}


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return ``target``, building it first (once, under a lock, atomically) if missing."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{target.name}.lock"):
        if target.exists():  # built by another request while this one waited
            return target
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(fd)
        os.unlink(tmp_name)  # builders create the file themselves
        try:
            build(Path(tmp_name))
            os.replace(tmp_name, target)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
    return target


def job_product_path(ctx: JobContext, product: Product) -> Path:
    """The product's file, built now if this is its first request."""
    job_id = ctx.facts.job_id
    if product.needs_solution and not (ctx.job_dir / WCS_NAME).exists():
        raise ProductUnavailable(f"Job {job_id} is not solved, so it has no {product.filename}.")
    if not (ctx.job_dir / AXY_NAME).exists():
        raise ProductUnavailable(f"Job {job_id} has no detected sources.")
    if product.needs_pixels and ctx.facts.image_kind not in RASTER_KINDS | {"fits"}:
        raise ProductUnavailable(
            f"{product.filename} needs the image's pixels, and a star list has no pixels."
        )
    return build_once(ctx.job_dir / product.filename, lambda target: product.build(ctx, target))
