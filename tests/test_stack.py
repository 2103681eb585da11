"""``nova up`` runs the whole stack bare (redis, gunicorn, worker) and solves an upload."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .conftest import free_port, wait_for

pytestmark = pytest.mark.engine


def test_nova_up_serves_and_solves_then_stops_cleanly(tmp_path: Path, apod: Path) -> None:
    web_port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env.update(
        NOVA_DATA_DIR=str(tmp_path / "data"),
        NOVA_PORT=str(web_port),
        NOVA_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
    )
    log_path = tmp_path / "stack.log"
    with log_path.open("wb") as log:
        stack = subprocess.Popen(
            [sys.executable, "-m", "nova", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{web_port}"
    try:

        def serving() -> bool:
            try:
                return requests.get(f"{base}/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        assert wait_for(serving, 60), log_path.read_text()[-3000:]
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

        assert wait_for(finished, 120, interval=0.5), log_path.read_text()[-3000:]
        state = requests.get(status_url + "/state", timeout=5).json()
        job = state["images"][0]["job"]
        assert job["status"] == "success", job
        page = requests.get(base + state["images"][0]["result_url"], timeout=5).text
        assert "Calibration" in page and "12h 28m" in page  # RA 187.2 degrees
        wcs = requests.get(f"{base}/wcs_file/{job['id']}", timeout=5)
        assert wcs.headers["Content-Type"] == "application/fits"
        # The redis started by `nova up` keeps its data in the data directory.
        assert (tmp_path / "data" / "redis").is_dir()
    finally:
        stack.send_signal(signal.SIGTERM)
        try:
            stack.wait(timeout=40)
        except subprocess.TimeoutExpired:
            stack.kill()
            raise
    assert stack.returncode == 0, log_path.read_text()[-3000:]
    time.sleep(0.5)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/", timeout=1)
