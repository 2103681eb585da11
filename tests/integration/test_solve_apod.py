"""The real engine solves the sample photos uploaded through the web form."""

from __future__ import annotations

import bz2
import gzip
import io
import math
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from flask.testing import FlaskClient
from PIL import Image

from nova.db.models import Job, UserImage
from nova.extensions import db
from tests.support.processes import run_worker

pytestmark = pytest.mark.engine

# name: (RA, Dec, field width in degrees, field height in degrees); tolerance 0.05 degrees.
APOD_CENTRES = {
    "apod1": (100.216, 9.832, 1.5, 1.0),
    "apod2": (84.577, -2.756, 4.5, 3.4),
    "apod3": (130.274, -43.874, 8.4, 6.3),
    "apod4": (187.185, 56.713, 33.0, 24.0),
    "apod5": (90.259, 4.714, 64.0, 50.0),
}
TOLERANCE_DEG = 0.05


def scale_hint(width_deg: float) -> dict[str, str]:
    """A +-20% degwidth hint around the known width, as a careful user would give."""
    return {
        "scale_hint": "on",
        "scale_units": "degwidth",
        "scale_type": "ul",
        "scale_lower": f"{width_deg * 0.8:.3f}",
        "scale_upper": f"{width_deg * 1.2:.3f}",
    }


def upload(client: FlaskClient, data: bytes, filename: str, **fields: str) -> int:
    """Upload through the web form; return the submission id from the redirect."""
    form = {"file": (io.BytesIO(data), filename), **fields}
    response = client.post("/upload", data=form, content_type="multipart/form-data")
    assert response.status_code == 303, response.get_data(as_text=True)
    match = re.fullmatch(r"/status/(\d+)", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def finished_job(client: FlaskClient, submission_id: int) -> Job:
    state = client.get(f"/status/{submission_id}/state").get_json()
    assert state["finished"], state
    assert len(state["images"]) == 1
    job = db.session.get(Job, state["images"][0]["job"]["id"])
    assert job is not None
    db.session.refresh(job)
    return job


def angular_distance(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    cos = math.sin(d1) * math.sin(d2) + math.cos(d1) * math.cos(d2) * math.cos(r1 - r2)
    return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def assert_centre(job: Job, name: str) -> None:
    ra, dec, width, height = APOD_CENTRES[name]
    assert job.status == "success", (job.failure_reason, job.stage)
    cal = job.calibration
    assert cal is not None
    assert abs(cal.ra - ra) <= TOLERANCE_DEG / max(math.cos(math.radians(dec)), 0.1)
    assert abs(cal.dec - dec) <= TOLERANCE_DEG
    assert angular_distance(cal.ra, cal.dec, ra, dec) <= TOLERANCE_DEG
    # Field size is nova's pixscale x pixels: for the widest fields the gnomonic projection
    # makes that up to ~11 % larger than the angle across the field (apod5: 70.9 vs 64).
    assert cal.width_arcsec / 3600 == pytest.approx(width, rel=0.12)
    assert cal.height_arcsec / 3600 == pytest.approx(height, rel=0.12)


def test_each_apod_photo_solves_through_the_web_form(client: FlaskClient, apod: Path) -> None:
    submissions = {}
    for name, (_, _, width, _) in APOD_CENTRES.items():
        data = (apod / f"{name}.jpg").read_bytes()
        submissions[name] = upload(client, data, f"{name}.jpg", **scale_hint(width))
    run_worker()
    for name, submission_id in submissions.items():
        job = finished_job(client, submission_id)
        assert_centre(job, name)
        assert job.sources_detected and job.sources_detected > 10
        # The result page shows the calibration, the wcs.fits download and the log.
        page = client.get(f"/user_images/{job.user_image_id}").get_data(as_text=True)
        assert f"{job.calibration.ra:.3f}, {job.calibration.dec:.3f}" in page
        assert f"/wcs_file/{job.id}" in page
        assert "solved with index" in page
        wcs = client.get(f"/wcs_file/{job.id}")
        assert wcs.status_code == 200
        assert wcs.headers["Content-Type"] == "application/fits"
        header = fits.Header.fromstring(wcs.get_data(as_text=True))
        assert header["CTYPE1"].startswith("RA---TAN")


def test_blind_solve_with_nova_defaults(client: FlaskClient, apod: Path) -> None:
    """No hints at all: nova's defaults (downsample 2, 1000 sources) solve apod4 blind."""
    submission_id = upload(client, (apod / "apod4.jpg").read_bytes(), "apod4.jpg")
    run_worker()
    assert_centre(finished_job(client, submission_id), "apod4")


def _grey(apod: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(apod / f"{name}.jpg").convert("L"))


def _fits_bytes(pixels: np.ndarray, *, compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    # FITS rows run bottom-up: flip so the sky is the same as in the JPEG.
    data = np.flipud(pixels).astype(np.int16)
    if compressed:
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(buffer)
    else:
        fits.PrimaryHDU(data).writeto(buffer)
    return buffer.getvalue()


def _raster_bytes(apod: Path, name: str, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.open(apod / f"{name}.jpg").save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "variant",
    ["png", "gif", "tiff", "fits", "fits.fz", "png.gz", "fits.bz2", "misnamed"],
)
def test_every_input_format_is_recognised_by_content(
    client: FlaskClient, apod: Path, variant: str
) -> None:
    grey = _grey(apod, "apod4")
    data = {
        "png": lambda: _raster_bytes(apod, "apod4", "PNG"),
        "gif": lambda: _raster_bytes(apod, "apod4", "GIF"),
        "tiff": lambda: _raster_bytes(apod, "apod4", "TIFF"),
        "fits": lambda: _fits_bytes(grey),
        "fits.fz": lambda: _fits_bytes(grey, compressed=True),
        "png.gz": lambda: gzip.compress(_raster_bytes(apod, "apod4", "PNG")),
        "fits.bz2": lambda: bz2.compress(_fits_bytes(grey)),
        # A FITS file named like a JPEG: the name is never trusted.
        "misnamed": lambda: _fits_bytes(grey),
    }[variant]()
    filename = "apod4.jpg" if variant == "misnamed" else f"apod4.{variant}"
    submission_id = upload(client, data, filename, **scale_hint(33.0))
    run_worker()
    job = finished_job(client, submission_id)
    assert_centre(job, "apod4")
    image = db.session.get(UserImage, job.user_image_id)
    expected_kind = variant.split(".")[0] if variant != "misnamed" else "fits"
    assert image.kind == ("fits" if expected_kind == "fits" else expected_kind)
    assert (image.width, image.height) == (719, 507)
    assert client.get(f"/image/{image.id}").status_code == 200


def display_up_position_angle(job: Job, y_axis_down: bool) -> float:
    """Position angle (N through E) of the picture's "up" at its centre, from the full WCS."""
    header = fits.Header.fromstring(job.calibration.wcs_header, sep="\n")
    wcs = WCS(header)
    width, height = job.user_image.width, job.user_image.height
    cx, cy = width / 2 - 0.5, height / 2 - 0.5  # 0-based centre
    centre = wcs.pixel_to_world(cx, cy)
    up = wcs.pixel_to_world(cx, cy - 5 if y_axis_down else cy + 5)
    return float(centre.position_angle(up).deg)


def test_orientation_is_what_a_viewer_sees_for_jpeg_and_fits(
    client: FlaskClient, apod: Path
) -> None:
    """The same sky as JPEG (rows top-down) and as FITS (rows bottom-up): "up is N degrees E
    of N" must match the picture as displayed, for both."""
    hints = {**scale_hint(33.0), "crpix_center": "on"}  # CD at the centre: no wide-field skew
    jpeg_id = upload(client, (apod / "apod4.jpg").read_bytes(), "a.jpg", **hints)
    fits_id = upload(client, _fits_bytes(_grey(apod, "apod4")), "a.fits", **hints)
    run_worker()
    jpeg_job, fits_job = finished_job(client, jpeg_id), finished_job(client, fits_id)
    for job, y_axis_down in ((jpeg_job, True), (fits_job, False)):
        expected = display_up_position_angle(job, y_axis_down)
        difference = (job.calibration.orientation - expected + 180) % 360 - 180
        assert abs(difference) < 0.5, (job.calibration.orientation, expected)
    # Parity is reported in the engine's frame, as nova does: the flip inverts it.
    assert jpeg_job.calibration.parity == -fits_job.calibration.parity


def test_star_list_uploads_solve(client: FlaskClient, apod: Path) -> None:
    """The engine's own FITS star list, and the same stars as a text list."""
    fits_id = upload(client, (apod / "apod4.xyls").read_bytes(), "apod4.xyls", **scale_hint(33.0))
    with fits.open(apod / "apod4.xyls") as hdus:
        table = hdus[1].data
        lines = ["# X Y"] + [
            f"{x:.3f} {y:.3f}" for x, y in zip(table["X"], table["Y"], strict=True)
        ]
    text_id = upload(
        client,
        "\n".join(lines).encode(),
        "stars.txt",
        image_width="719",
        image_height="507",
        **scale_hint(33.0),
    )
    run_worker()
    for submission_id in (fits_id, text_id):
        job = finished_job(client, submission_id)
        assert job.user_image.kind == "xylist"
        assert (job.user_image.width, job.user_image.height) == (719, 507)
        assert_centre(job, "apod4")


def test_blank_image_fails_with_a_reason(client: FlaskClient) -> None:
    buffer = io.BytesIO()
    Image.new("L", (640, 480), 90).save(buffer, format="PNG")
    submission_id = upload(client, buffer.getvalue(), "blank.png")
    run_worker()
    job = finished_job(client, submission_id)
    assert job.status == "failure"
    assert re.fullmatch(
        r"No stars were detected in the image\.|Only \d (star was|stars were) detected in "
        r"the image; at least 5 are needed to solve\.",
        job.failure_reason or "",
    ), job.failure_reason
    assert job.calibration is None


def test_source_extractor_option(client: FlaskClient, apod: Path) -> None:
    data = (apod / "apod4.jpg").read_bytes()
    submission_id = upload(client, data, "apod4.jpg", use_sextractor="on", **scale_hint(33.0))
    run_worker()
    job = finished_job(client, submission_id)
    assert_centre(job, "apod4")
    log = client.get(f"/joblog/{job.id}").get_data(as_text=True)
    assert "--use-source-extractor" in log


def random_star_field(count: int, seed: int) -> bytes:
    """A 640x480 PNG of ``count`` Gaussian "stars" at random places: no real sky."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640]
    sky = rng.normal(20, 2, (480, 640))
    for x, y, flux in zip(
        rng.uniform(10, 630, count),
        rng.uniform(10, 470, count),
        rng.uniform(80, 230, count),
        strict=True,
    ):
        sky += flux * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_random_star_field_fails_with_a_reason(client: FlaskClient) -> None:
    hints = {**scale_hint(10.0), "center_ra": "0", "center_dec": "0", "radius": "10"}
    submission_id = upload(client, random_star_field(40, seed=7), "random.png", **hints)
    run_worker()
    job = finished_job(client, submission_id)
    assert job.status == "failure"
    assert job.failure_reason and job.failure_reason.startswith("No solution found")
    assert job.calibration is None
    page = client.get(f"/user_images/{job.user_image_id}").get_data(as_text=True)
    assert "No solution found" in page


def engine_processes(data_dir: str) -> list[str]:
    """Engine processes working in this test's data directory (other runs may share the box)."""
    result = subprocess.run(
        ["pgrep", "-a", "-f", "astrometry-engine|solve-field"], capture_output=True, text=True
    )
    return [line for line in _engine_lines(result.stdout) if data_dir in _cwd_of(line)]


def _engine_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "pgrep" not in line]


def _cwd_of(line: str) -> str:
    """The working directory of a process line from pgrep -a, plus its command line."""
    pid = line.split()[0]
    try:
        return os.readlink(f"/proc/{pid}/cwd") + " " + line
    except OSError:
        return line


def test_a_solve_over_the_time_limit_is_killed_and_fails(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """900 noise sources keep the engine busy for minutes; a 6 s limit must stop it."""
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray((rng.random((480, 640)) ** 8 * 255).astype(np.uint8)).save(buffer, "PNG")
    submission_id = upload(client, buffer.getvalue(), "noise.png", **scale_hint(10.0))
    data_dir = os.environ["NOVA_DATA_DIR"]
    assert engine_processes(data_dir) == []
    monkeypatch.setenv("NOVA_SOLVE_TIME_LIMIT", "6")
    started = time.monotonic()
    run_worker()
    elapsed = time.monotonic() - started
    job = finished_job(client, submission_id)
    assert job.status == "failure"
    assert job.failure_reason == "Stopped after the time limit of 6 s without a solution."
    assert job.finished_at is not None
    # The stars were extracted before the limit stopped the engine: the count is kept.
    assert job.sources_detected is not None and job.sources_detected >= 50
    state = client.get(f"/status/{submission_id}/state").get_json()
    assert state["images"][0]["job"]["sources_detected"] == job.sources_detected
    assert elapsed < 30, f"the worker took {elapsed:.1f} s for a 6 s limit"
    # The whole process group went: no engine keeps running after its job ended.
    assert engine_processes(data_dir) == []
