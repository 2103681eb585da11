"""Real nova clients from PyPI against a live server started with ``nova up``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from astropy.io import fits

from .conftest import free_port, wait_for

pytestmark = pytest.mark.engine
HINTS = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, API key) of a whole stack: redis, gunicorn and a worker."""
    tmp_path = tmp_path_factory.mktemp("live")
    web_port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env.update(
        NOVA_DATA_DIR=str(tmp_path / "data"),
        NOVA_PORT=str(web_port),
        NOVA_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
    )
    nova = [sys.executable, "-m", "nova"]
    subprocess.run(nova + ["init-db"], env=env, check=True, capture_output=True)
    created = subprocess.run(
        nova + ["create-user", "observer@example.org"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    match = re.search(r"API key: ([a-z0-9]+)", created.stdout)
    assert match, created.stdout
    log_path = tmp_path / "stack.log"
    with log_path.open("wb") as log:
        stack = subprocess.Popen(nova + ["up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{web_port}"

    def serving() -> bool:
        try:
            return requests.get(base + "/", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        assert wait_for(serving, 60), log_path.read_text()[-3000:]
        yield base, match.group(1)
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=40)


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
