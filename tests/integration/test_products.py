"""Products built once from a solution: new-image FITS and sources with RA/Dec."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from nova.db.models import Job
from nova.extensions import db
from tests.integration.test_solve_apod import finished_job, scale_hint, upload
from tests.support.processes import run_worker

pytestmark = pytest.mark.engine


def solve(client: FlaskClient, data: bytes, name: str) -> Job:
    submission_id = upload(client, data, name, **scale_hint(33.0))
    run_worker()
    job = finished_job(client, submission_id)
    assert job.status == "success", job.failure_reason
    return job


def fetch_fits(client: FlaskClient, path: str) -> fits.HDUList:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.headers["Content-Type"] == "application/fits"
    return fits.open(io.BytesIO(response.data))


def assert_wcs_maps_centre(header: fits.Header, job: Job) -> None:
    wcs = WCS(header, naxis=2)
    width, height = job.user_image.width, job.user_image.height
    ra, dec = wcs.all_pix2world([[0.5 + width / 2, 0.5 + height / 2]], 1)[0]
    cal = job.calibration
    assert abs(dec - cal.dec) * 3600 < 1
    assert abs((ra - cal.ra + 180) % 360 - 180) * np.cos(np.radians(dec)) * 3600 < 1


def test_new_fits_of_a_jpeg_keeps_its_pixels_and_carries_the_solution(
    app: Flask, client: FlaskClient, apod: Path
) -> None:
    job = solve(client, (apod / "apod4.jpg").read_bytes(), "apod4.jpg")
    started = time.perf_counter()
    with fetch_fits(client, f"/new_fits_file/{job.id}") as hdus:
        first = time.perf_counter() - started
        rgb = np.asarray(Image.open(apod / "apod4.jpg").convert("RGB"))
        assert hdus[0].data.shape == (3, 507, 719)
        assert np.array_equal(np.moveaxis(hdus[0].data, 0, -1), rgb)
        assert hdus[0].header["CTYPE1"] == "RA---TAN-SIP" and "A_2_0" in hdus[0].header
        assert_wcs_maps_centre(hdus[0].header, job)
    built = Path(app.config["DATA_DIR"], "jobs").rglob("new-image.fits")
    path = next(built)
    mtime = path.stat().st_mtime_ns
    started = time.perf_counter()
    second = client.get(f"/new_fits_file/{job.id}/")
    again = time.perf_counter() - started
    assert second.status_code == 200 and path.stat().st_mtime_ns == mtime  # not rebuilt
    print(f"new_fits_file: first request {first * 1000:.1f} ms, cached {again * 1000:.1f} ms")


def test_new_fits_of_a_fits_upload_replaces_its_old_wcs(client: FlaskClient, apod: Path) -> None:
    grey = np.flipud(np.asarray(Image.open(apod / "apod4.jpg").convert("L"))).astype(np.int16)
    header = fits.Header()
    header["OBSERVER"] = "Ann"
    for key, value in {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CRVAL1": 1.0,
        "CRVAL2": 2.0,
        "CDELT1": 0.1,
        "CDELT2": 0.1,
        "CROTA2": 5.0,
    }.items():
        header[key] = value  # a wrong WCS from the camera software
    buffer = io.BytesIO()
    fits.PrimaryHDU(grey, header=header).writeto(buffer)
    job = solve(client, buffer.getvalue(), "with-old-wcs.fits")
    with fetch_fits(client, f"/new_fits_file/{job.id}") as hdus:
        assert np.array_equal(hdus[0].data, grey)
        new = hdus[0].header
        assert new["OBSERVER"] == "Ann"
        assert "CDELT1" not in new and "CROTA2" not in new
        assert new["CRVAL1"] != 1.0
        assert_wcs_maps_centre(new, job)


def test_image_radec_lists_every_detected_source(client: FlaskClient, apod: Path) -> None:
    job = solve(client, (apod / "apod4.jpg").read_bytes(), "apod4.jpg")
    with fetch_fits(client, f"/axy_file/{job.id}") as axy:
        rows = len(axy[1].data)
    with fetch_fits(client, f"/image_rd_file/{job.id}") as hdus:
        table = hdus[1].data
        assert {"X", "Y", "FLUX", "BACKGROUND", "RA", "DEC"} <= set(hdus[1].columns.names)
        assert len(table) == rows == job.sources_detected
        wcs = WCS(fits.Header.fromstring(job.calibration.wcs_header, sep="\n"))
        ra, dec = wcs.all_pix2world(table["X"], table["Y"], 1)
        assert np.allclose(table["RA"], ra) and np.allclose(table["DEC"], dec)
        assert np.all(np.abs(table["DEC"] - job.calibration.dec) < job.calibration.radius + 1)


def test_concurrent_first_requests_build_once(app: Flask, client: FlaskClient, apod: Path) -> None:
    job = solve(client, (apod / "apod4.jpg").read_bytes(), "apod4.jpg")
    bodies: list[bytes] = []

    def fetch() -> None:
        bodies.append(app.test_client().get(f"/image_rd_file/{job.id}").data)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(bodies) == 4 and len(set(bodies)) == 1
    job_dir = Path(app.config["DATA_DIR"], "jobs").rglob("image-radec.fits")
    leftovers = [p.name for p in next(job_dir).parent.iterdir() if p.name.startswith(".image")]
    assert leftovers == [".image-radec.fits.lock"]  # no half-written temporaries


def test_products_of_unsolved_jobs_and_star_lists_are_404_with_a_reason(
    client: FlaskClient, apod: Path
) -> None:
    blank = io.BytesIO()
    Image.new("L", (300, 200), 50).save(blank, format="PNG")
    submission_id = upload(client, blank.getvalue(), "blank.png")
    run_worker()
    failed = finished_job(client, submission_id)
    response = client.get(f"/new_fits_file/{failed.id}")
    assert response.status_code == 404 and "is not solved" in response.get_data(as_text=True)
    stars = solve(client, (apod / "apod4.xyls").read_bytes(), "apod4.xyls")
    response = client.get(f"/new_fits_file/{stars.id}")
    assert response.status_code == 404
    assert "star list has no pixels" in response.get_data(as_text=True)
    assert client.get(f"/image_rd_file/{stars.id}").status_code == 200
    db.session.remove()
