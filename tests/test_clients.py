"""Real nova clients from PyPI against a live server started with ``nova up``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from astropy.io import fits

from .conftest import live_stack

pytestmark = pytest.mark.engine
HINTS = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a whole stack: redis, gunicorn and a worker."""
    with live_stack(tmp_path_factory.mktemp("live")) as stack:
        created = stack.nova("create-user", "observer@example.org")
        match = re.search(r"API key: ([a-z0-9]+)", created)
        assert match, created
        yield stack.base, match.group(1)


def apod4_stars(apod: Path) -> tuple[list[float], list[float]]:
    with fits.open(apod / "apod4.xyls") as hdus:
        return list(map(float, hdus[1].data["X"])), list(map(float, hdus[1].data["Y"]))


def test_astroquery_solves_a_source_list_and_an_image(
    live_server: tuple[str, str], apod: Path
) -> None:
    from astroquery.astrometry_net import AstrometryNet, conf

    base, key = live_server
    solver = AstrometryNet()
    solver.URL, solver.API_URL = base, base + "/api"
    with conf.set_temp("api_key", key):
        xs, ys = apod4_stars(apod)
        header = solver.solve_from_source_list(xs, ys, 719, 507, solve_timeout=120, **HINTS)
        assert header["CTYPE1"].startswith("RA---TAN")
        assert header["IMAGEW"] == 719
        image_header = solver.solve_from_image(
            str(apod / "apod4.jpg"), force_image_upload=True, solve_timeout=120, **HINTS
        )
        assert image_header["CTYPE2"].startswith("DEC--TAN")
        assert image_header["CRVAL2"] == pytest.approx(56.7, abs=5)


def test_astrometry_net_client_uploads_waits_and_reads_results(
    live_server: tuple[str, str], apod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from astrometry_net_client import Session, statusables, uploads
    from astrometry_net_client import session as session_module

    base, key = live_server
    # The package hard-codes nova's address; point its classes at ours (as its users do).
    monkeypatch.setattr(session_module.Session, "url", base + "/api/login")
    monkeypatch.setattr(uploads.FileUpload, "url", base + "/api/upload")
    monkeypatch.setattr(statusables.Submission, "url", base + "/api/submissions/{submission.id}")
    monkeypatch.setattr(statusables.Job, "url", base + "/api/jobs/{job.id}")
    monkeypatch.setattr(statusables.Job, "wcs_file_url", base + "/wcs_file/{job.id}")
    monkeypatch.setattr(statusables.Job, "corr_file_url", base + "/corr_file/{job.id}")
    session = Session(api_key=key)
    upload = uploads.FileUpload(str(apod / "apod4.jpg"), session=session, settings=HINTS)
    submission = upload.submit()
    submission.until_done(start=1, end=4, timeout=120)
    job = submission.jobs[0]
    job.until_done(start=1, end=4, timeout=120)
    assert job.success()
    info = job.info()
    assert info["original_filename"] == "apod4.jpg"
    assert abs(info["calibration"]["dec"] - 56.713) < 0.05
    assert "Part of the constellation Ursa Major (UMa)" in info["machine_tags"]
    header = job.wcs_file()
    assert header["CTYPE1"] == "RA---TAN-SIP"
    corr = job.corr_file()
    assert len(corr[1].data) > 10
