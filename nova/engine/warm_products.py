"""The warm engine's products, written as the engine writes them: wcs.fits (TAN, + SIP),
rdls.fits (the reference stars in the field), corr.fits (each with its nearest detected
source) and match.fits (the best match, as nova.engine.quality reads it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from nova.engine.axy import AxyJob
from nova.engine.job_files import SOLUTION_NAMES

# corr.fits: a reference star and a detected source correspond when this close (pixels):
# at least 3 sigma of the positional error, and 1 % of the diagonal because distortion
# left after a low-order fit grows towards the corners (the engine's matches reach that).
CORR_SIGMAS = 3.0


CORR_DIAGONAL_FRACTION = 0.01


def _header_from_match(
    job: AxyJob, match: dict[str, Any], index_files: Sequence[Path]
) -> fits.Header:
    """The solution as the engine writes wcs.fits: TAN (+ SIP when the tweak order is 2 or
    more), IMAGEW/IMAGEH, and comments naming the index and the match."""
    fields: dict[str, tuple[Any, str]] = {
        key: (value[0], value[1]) for key, value in match["wcs_fields"].items()
    }
    order = int(fields.get("A_ORDER", (0, ""))[0])
    with_sip = job.tweak and order >= 2
    header = fits.Header()
    header["WCSAXES"] = fields["WCSAXES"]
    projection = "TAN"
    header["CTYPE1"] = (
        f"RA---{projection}{'-SIP' if with_sip else ''}",
        "TAN (gnomic) projection" + (" + SIP distortions" if with_sip else ""),
    )
    header["CTYPE2"] = (
        f"DEC--{projection}{'-SIP' if with_sip else ''}",
        "TAN (gnomic) projection" + (" + SIP distortions" if with_sip else ""),
    )
    for key in (
        "EQUINOX",
        "LONPOLE",
        "LATPOLE",
        "CRVAL1",
        "CRVAL2",
        "CRPIX1",
        "CRPIX2",
        "CUNIT1",
        "CUNIT2",
        "CD1_1",
        "CD1_2",
        "CD2_1",
        "CD2_2",
    ):
        header[key] = fields[key]
    header["IMAGEW"] = (job.width, "Image width,  in pixels.")
    header["IMAGEH"] = (job.height, "Image height, in pixels.")
    if with_sip:
        for prefix in ("A", "B", "AP", "BP"):
            header[f"{prefix}_ORDER"] = fields[f"{prefix}_ORDER"]
            for key, value in fields.items():
                if key.startswith(f"{prefix}_") and key != f"{prefix}_ORDER":
                    header[key] = value
    header.add_history("Created by Nova's warm engine (astrometry.net solver as a library).")
    header.add_comment(f"index: {Path(match['index_path']).name}")
    header.add_comment(f"log odds: {match['logodds']:g}")
    header.add_comment(f"scale: {match['scale_arcsec_per_pixel']:g} arcsec/pix")
    header.add_comment(f"nindex: {len(match['stars'])}")
    header.add_comment(f"nfield: {len(job.x)}")
    header.add_comment(f"index files loaded: {len(index_files)}")
    return header


def write_products(
    job: AxyJob, match: dict[str, Any], work_dir: Path, index_files: Sequence[Path]
) -> None:
    header = _header_from_match(job, match, index_files)
    fits.PrimaryHDU(header=header).writeto(work_dir / "wcs.fits.tmp", overwrite=True)
    stars = match["stars"]
    ra = np.array([star["ra_deg"] for star in stars], dtype=float)
    dec = np.array([star["dec_deg"] for star in stars], dtype=float)
    tag_names = list(stars[0]["metadata"]) if stars else []
    tags = {
        name: np.array([star["metadata"].get(name, np.nan) for star in stars], dtype=float)
        for name in tag_names
    }
    _write_rdls(ra, dec, tags, work_dir / "rdls.fits.tmp")
    # corr.fits: each reference star with the nearest detected source, one to one.
    wcs = WCS(header, relax=True, naxis=2)
    index_x, index_y = wcs.all_world2pix(ra, dec, 1) if len(ra) else (ra, ra)
    field_ra, field_dec = wcs.all_pix2world(job.x, job.y, 1)
    chosen = _corresponding(job, index_x, index_y)
    chosen.sort(key=lambda pair: pair[1])  # by field id, as the engine's
    fid = np.array([source for _, source, _ in chosen], dtype=np.int32)
    sid = np.array([star for _, _, star in chosen], dtype=np.int32)
    distances = np.array([distance for distance, _, _ in chosen], dtype=float)
    corr_columns = [
        fits.Column(name="field_x", format="D", unit="pixels", array=job.x[fid]),
        fits.Column(name="field_y", format="D", unit="pixels", array=job.y[fid]),
        fits.Column(name="field_ra", format="D", unit="degrees", array=field_ra[fid]),
        fits.Column(name="field_dec", format="D", unit="degrees", array=field_dec[fid]),
        fits.Column(name="index_x", format="D", unit="pixels", array=np.asarray(index_x)[sid]),
        fits.Column(name="index_y", format="D", unit="pixels", array=np.asarray(index_y)[sid]),
        fits.Column(name="index_ra", format="D", unit="degrees", array=ra[sid]),
        fits.Column(name="index_dec", format="D", unit="degrees", array=dec[sid]),
        fits.Column(name="index_id", format="J", array=sid),
        fits.Column(name="field_id", format="J", array=fid),
        fits.Column(
            name="match_weight",
            format="D",
            array=np.exp(-0.5 * (distances / max(job.positional_error, 1e-9)) ** 2),
        ),
    ]
    corr_columns += [
        fits.Column(name=name, format="E", array=tags[name][sid]) for name in tag_names
    ]
    if job.flux is not None:
        corr_columns.append(fits.Column(name="FLUX", format="E", array=job.flux[fid]))
    if job.background is not None:
        corr_columns.append(fits.Column(name="BACKGROUND", format="E", array=job.background[fid]))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(corr_columns)]).writeto(
        work_dir / "corr.fits.tmp", overwrite=True
    )
    _write_match(job, match, len(chosen), work_dir / "match.fits.tmp")
    # wcs.fits last: its presence means "solved" to solver.solve and the products.
    for name in SOLUTION_NAMES:
        os.replace(work_dir / f"{name}.tmp", work_dir / name)


def _write_rdls(ra: np.ndarray, dec: np.ndarray, tags: dict[str, np.ndarray], path: Path) -> None:
    """rdls.fits: the reference stars in the field, tag-along columns first as the engine's."""
    rdls_columns = [fits.Column(name=name, format="E", array=tags[name]) for name in tags]
    rdls_columns += [
        fits.Column(name="RA", format="D", unit="deg", array=ra),
        fits.Column(name="DEC", format="D", unit="deg", array=dec),
    ]
    rdls = fits.BinTableHDU.from_columns(rdls_columns)
    rdls.header["AN_FILE"] = ("RDLS", "Astrometry.net file type")
    fits.HDUList([fits.PrimaryHDU(), rdls]).writeto(path, overwrite=True)


def _corresponding(
    job: AxyJob, index_x: np.ndarray, index_y: np.ndarray
) -> list[tuple[float, int, int]]:
    """(distance, source, star) for each reference star and its nearest detected source
    within reach, one to one, nearest pairs first."""
    sigma = max(job.positional_error, CORR_DIAGONAL_FRACTION * job.diagonal / CORR_SIGMAS)
    reach = CORR_SIGMAS * sigma
    pairs: list[tuple[float, int, int]] = []
    for star, (sx, sy) in enumerate(zip(index_x, index_y, strict=True)):
        distance = np.hypot(job.x - sx, job.y - sy)
        for source in np.flatnonzero(distance <= reach):
            pairs.append((float(distance[source]), int(source), star))
    pairs.sort()
    taken_sources: set[int] = set()
    taken_stars: set[int] = set()
    chosen: list[tuple[float, int, int]] = []
    for distance, source, star in pairs:
        if source in taken_sources or star in taken_stars:
            continue
        taken_sources.add(source)
        taken_stars.add(star)
        chosen.append((distance, source, star))
    return chosen


def _write_match(job: AxyJob, match: dict[str, Any], matched: int, path: Path) -> None:
    """match.fits as the engine's, with the columns nova.engine.quality reads: the library says
    the log-odds, the index and its stars in the field; the pairs of corr.fits are the
    matched stars."""
    index_id = int(fits.getheader(match["index_path"]).get("INDEXID", -1))
    columns = [
        fits.Column(name="LOGODDS", format="E", array=[match["logodds"]]),
        fits.Column(name="NMATCH", format="J", array=[matched]),
        fits.Column(name="NFIELD", format="J", array=[len(job.x)]),
        fits.Column(name="NINDEX", format="J", array=[len(match["stars"])]),
        fits.Column(name="INDEXID", format="J", array=[index_id]),
    ]
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns)])
    hdus[1].header["AN_FILE"] = ("MATCH", "Astrometry.net file type")
    hdus.writeto(path, overwrite=True)
