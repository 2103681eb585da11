"""``nova up`` runs the whole stack bare (redis, gunicorn, worker) and solves an upload."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from tests.support.processes import wait_for
from tests.support.stack import live_stack

pytestmark = pytest.mark.engine


def test_nova_up_serves_and_solves_then_stops_cleanly(tmp_path: Path, apod: Path) -> None:
    with live_stack(tmp_path) as stack:
        base = stack.base
        browser = requests.Session()  # keeps the session cookie the CSRF token belongs to
        form_page = browser.get(f"{base}/upload", timeout=10).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form_page).group(1)
        with (apod / "apod4.jpg").open("rb") as photo:
            response = browser.post(
                f"{base}/upload",
                files={"file": ("apod4.jpg", photo)},
                data={"csrf_token": token},
                allow_redirects=False,
                timeout=30,
            )
        assert response.status_code == 303
        status_url = base + response.headers["Location"]
        assert re.fullmatch(r".*/status/\d+", status_url)

        def finished() -> bool:
            return bool(requests.get(status_url + "/state", timeout=5).json()["finished"])

        assert wait_for(finished, 120, interval=0.5), stack.log_path.read_text()[-3000:]
        state = requests.get(status_url + "/state", timeout=5).json()
        job = state["images"][0]["job"]
        assert job["status"] == "success", job
        page = requests.get(base + state["images"][0]["result_url"], timeout=5).text
        assert "Calibration" in page and "12h 28m" in page  # RA 187.2 degrees
        wcs = requests.get(f"{base}/wcs_file/{job['id']}", timeout=5)
        assert wcs.headers["Content-Type"] == "application/fits"
        # The redis started by `nova up` keeps its data in the data directory.
        assert (tmp_path / "data" / "redis").is_dir()
    # Leaving the block sent SIGTERM: everything stopped, cleanly.
    assert stack.process.returncode == 0, stack.log_path.read_text()[-3000:]

    def refused() -> bool:
        try:
            requests.get(f"{base}/", timeout=10)
        except requests.ConnectionError:
            return True
        return False

    assert wait_for(refused, 60), "the web server still answers after nova up stopped"
