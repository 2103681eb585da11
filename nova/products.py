"""Products derived from a solved job, built once on first request and kept in its directory.

Each product is built behind a per-product file lock, so two requests never build it
twice, and written under a temporary name then renamed, so a reader never sees half a
file. The job directory itself was published whole by the worker.
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
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from PIL import Image as PILImage

from .inputs import RASTER_KINDS, PreparedInput
from .models import Job
from .solver import AXY_NAME, WCS_NAME

# Cards that describe a WCS: removed from an uploaded FITS header before the solution goes in.
OLD_WCS_CARD = re.compile(
    r"^(WCSAXES|CTYPE\d|CUNIT\d|CRVAL\d|CRPIX\d|CDELT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|"
    r"PS\d_\d+|LONPOLE|LATPOLE|EQUINOX|EPOCH|RADESYS[A-Z]?|RADECSYS|MJDREF|"
    r"[AB]P?_ORDER|[AB]P?_\d+_\d+|A_DMAX|B_DMAX|IMAGEW|IMAGEH)$"
)
STRUCTURAL_CARDS = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND",
                    "XTENSION", "PCOUNT", "GCOUNT", "BSCALE", "BZERO", "COMMENT", "HISTORY",
                    "DATE", ""}  # fmt: skip


class ProductUnavailable(Exception):
    """This job has no such product (e.g. it did not solve); the message says why."""


@dataclass(frozen=True)
class Product:
    filename: str
    download_name: str
    mimetype: str
    build: Callable[[Job, Path, Callable[[], PreparedInput]], None]


def solved_wcs_header(job_dir: Path) -> fits.Header:
    with fits.open(job_dir / WCS_NAME) as hdus:
        return hdus[0].header.copy()


def _image_pixels(prepared: PreparedInput) -> tuple[np.ndarray, fits.Header]:
    """The uploaded pixels, as the engine saw them (rows in file order), and their header."""
    if prepared.kind == "fits":
        with fits.open(prepared.path) as hdus:
            hdu = hdus[prepared.fits_extension]
            return np.asarray(hdu.data), hdu.header.copy()
    if prepared.kind in RASTER_KINDS:
        with PILImage.open(prepared.path) as image:
            if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA"):
                rgb = np.asarray(image.convert("RGB"))
                return np.moveaxis(rgb, -1, 0), fits.Header()  # (3, H, W) cube
            return np.asarray(image), fits.Header()
    raise ProductUnavailable("A star list has no pixels to write into a FITS image.")


def build_new_fits(job: Job, target: Path, prepare: Callable[[], PreparedInput]) -> None:
    """The uploaded image as FITS with the solved WCS (SIP included), old WCS cards removed.

    Raster rows are written in file order, as the engine numbered them, so the solution
    applies unchanged (the FITS then shows the picture upside down, as nova's does).
    """
    pixels, header = _image_pixels(prepare())
    for key in list(header.keys()):
        if OLD_WCS_CARD.match(key):
            del header[key]
    solution = solved_wcs_header(target.parent)
    for card in solution.cards:
        if card.keyword not in STRUCTURAL_CARDS:
            header[card.keyword] = (card.value, card.comment)
    if pixels.dtype == np.uint16:  # FITS has no unsigned 16-bit type but an offset convention
        hdu = fits.PrimaryHDU(data=pixels.astype(np.int32) - 32768, header=header)
        hdu.scale("int16", bzero=32768)
    else:
        hdu = fits.PrimaryHDU(data=pixels, header=header)
    hdu.writeto(target)


def build_image_radec(job: Job, target: Path, prepare: Callable[[], PreparedInput]) -> None:
    """Every detected source (all columns of job.axy) with its RA/Dec from the full solution."""
    with fits.open(target.parent / AXY_NAME) as hdus:
        table = hdus[1]
        names = [name.upper() for name in table.columns.names]
        x = table.data.field(names.index("X")).astype(np.float64)
        y = table.data.field(names.index("Y")).astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(solved_wcs_header(target.parent), relax=True)
        # Source positions in .axy files are FITS pixel coordinates (first pixel = 1).
        ra, dec = wcs.all_pix2world(x, y, 1)
        columns = list(table.columns) + [
            fits.Column(name="RA", format="D", unit="deg", array=ra),
            fits.Column(name="DEC", format="D", unit="deg", array=dec),
        ]
        fits.BinTableHDU.from_columns(columns).writeto(target)


PRODUCTS = {
    "new_fits_file": Product("new-image.fits", "new-image.fits", "application/fits",
                             build_new_fits),
    "image_rd_file": Product("image-radec.fits", "image-radec.fits", "application/fits",
                             build_image_radec),
}  # fmt: skip


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def product_path(
    job: Job, job_dir: Path, product: Product, prepare: Callable[[], PreparedInput]
) -> Path:
    """The product's file, built now if this is its first request."""
    target = job_dir / product.filename
    if target.exists():
        return target
    if not (job_dir / WCS_NAME).exists():
        raise ProductUnavailable(f"Job {job.id} is not solved, so it has no {product.filename}.")
    with _locked(job_dir / f".{product.filename}.lock"):
        if target.exists():  # built by another request while we waited for the lock
            return target
        fd, tmp_name = tempfile.mkstemp(dir=job_dir, prefix=f".{product.filename}.")
        os.close(fd)
        os.unlink(tmp_name)  # the builders create the file themselves
        try:
            product.build(job, Path(tmp_name), prepare)
            os.replace(tmp_name, target)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
    return target
