"""Pages and forms through the Flask test client: validation, refusals, status, downloads."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from nova.db.models import Job, Submission
from nova.extensions import db
from tests.support.processes import run_worker
from tests.support.settings import change_settings


def count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def stored_uploads(app: Flask) -> list[Path]:
    return [p for p in (Path(app.config["DATA_DIR"]) / "uploads").rglob("*") if p.is_file()]


def test_upload_page_offers_file_url_and_every_option(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    for name in (
        "file",
        "url",
        "scale_units",
        "scale_type",
        "scale_lower",
        "scale_upper",
        "scale_est",
        "scale_err",
        "center_ra",
        "center_dec",
        "radius",
        "parity",
        "tweak_order",
        "downsample_factor",
        "positional_error",
        "crpix_center",
        "invert",
        "use_sextractor",
        "image_width",
        "image_height",
    ):
        assert f'name="{name}"' in page, name
    assert client.get("/upload/").status_code == 200  # trailing slash: same page, no redirect


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({}, "Choose a file to upload or enter a URL."),
        ({"url": "ftp://example.org/a.jpg"}, "must start with http:// or https://"),
        ({"url": "not a url"}, "must start with http:// or https://"),
        ({"url": "http://x/a.jpg", "center_ra": "10"}, "Invalid center dec"),
        (
            {"url": "http://x/a.jpg", "scale_hint": "on", "scale_lower": "5", "scale_upper": "1"},
            "Invalid scale upper: must not be smaller than scale_lower.",
        ),
        ({"url": "http://x/a.jpg", "tweak_order": "ten"}, "Invalid tweak order"),
    ],
)
def test_bad_forms_are_refused_and_create_nothing(
    client: FlaskClient, form: dict[str, str], message: str
) -> None:
    response = client.post("/upload", data=form)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert count(Submission) == 0


def test_scale_fields_are_ignored_without_the_scale_hint_box(client: FlaskClient) -> None:
    response = client.post(
        "/upload", data={"url": "http://example.org/a.jpg", "scale_lower": "5", "scale_upper": "1"}
    )
    assert response.status_code == 303
    submission = db.session.scalars(select(Submission)).one()
    assert (submission.scale_lower, submission.scale_upper) == (0.1, 180.0)


def test_non_image_upload_is_refused_with_a_clear_message(app: Flask, client: FlaskClient) -> None:
    data = {"file": (io.BytesIO(b"%PDF-1.7 this is a document"), "notes.jpg")}
    response = client.post("/upload", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "This file&#39;s type is not supported." in page
    assert "Traceback" not in page
    assert count(Submission) == 0
    assert stored_uploads(app) == []


def test_oversized_upload_gets_a_413_page(app: Flask, client: FlaskClient) -> None:
    change_settings(app, MAX_CONTENT_LENGTH=1024)
    data = {"file": (io.BytesIO(b"\0" * 4096), "big.fits")}
    response = client.post("/upload", data=data, content_type="multipart/form-data")
    assert response.status_code == 413
    assert "larger than the limit" in response.get_data(as_text=True)


def test_upload_is_stored_once_and_queued(
    app: Flask, client: FlaskClient, apod: Path, redis_url: str
) -> None:
    for _ in range(2):
        data = {"file": (io.BytesIO((apod / "apod4.jpg").read_bytes()), "/home/me/sky/apod4.jpg")}
        response = client.post("/upload", data=data, content_type="multipart/form-data")
        assert response.status_code == 303
    assert len(stored_uploads(app)) == 1  # content-addressed by SHA-1
    submissions = db.session.scalars(select(Submission).order_by(Submission.created_at)).all()
    assert [s.original_filename for s in submissions] == ["apod4.jpg", "apod4.jpg"]
    queued = redis.Redis.from_url(redis_url).lrange("rq:queue:default", 0, -1)
    assert sorted(queued) == sorted(f"submission-{s.id}".encode() for s in submissions)
    first = submissions[0].id
    state = client.get(f"/status/{first}/state").get_json()
    assert state == {
        "id": first,
        "error_message": None,
        "processing_started": False,
        "finished": False,
        "images": [],
    }
    page = client.get(f"/status/{first}").get_data(as_text=True)
    assert "Waiting for a worker" in page and "status.js" in page


@pytest.mark.parametrize(
    "path",
    [
        "/status/99",
        "/status/99/state",
        "/user_images/99",
        "/image/99",
        "/wcs_file/99",
        "/joblog/99",
    ],
)
def test_unknown_ids_are_404_pages(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "There is no" in response.get_data(as_text=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def file_server(apod: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving the sample photos."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_QuietHandler, directory=str(apod))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.engine
def test_url_upload_is_downloaded_and_solved(
    client: FlaskClient, file_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOVA_URL_ALLOW_PRIVATE", "1")  # the file server is on loopback
    form = {
        "url": f"{file_server}/apod4.jpg",
        "scale_hint": "on",
        "scale_lower": "25",
        "scale_upper": "40",
    }
    assert client.post("/upload", data=form).status_code == 303
    run_worker()
    job = db.session.scalars(select(Job)).one()
    assert job.status == "success", job.failure_reason
    assert job.user_image.original_filename == "apod4.jpg"
    assert abs(job.calibration.dec - 56.713) < 0.05


def test_failed_download_ends_as_a_failed_job(
    client: FlaskClient, file_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOVA_URL_ALLOW_PRIVATE", "1")  # the file server is on loopback
    response = client.post("/upload", data={"url": f"{file_server}/missing.jpg"})
    assert response.status_code == 303
    run_worker()
    state = client.get(response.headers["Location"] + "/state").get_json()
    assert state["finished"]
    assert "Failed to download" in state["error_message"] and "404" in state["error_message"]
    job = state["images"][0]["job"]
    assert job["status"] == "failure"
    assert job["failure_reason"] == state["error_message"]


def test_healthz_reports_database_and_redis(app: Flask, client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "redis": "ok"}
    # Redis gone (a port nothing listens on): unhealthy, with the reason, never a 500.
    from nova import create_app
    from tests.support.processes import free_port

    broken = create_app({"TESTING": True, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    answer = broken.test_client().get("/healthz")
    assert answer.status_code == 503
    assert answer.get_json()["redis"].startswith("error") and answer.get_json()["database"] == "ok"


@pytest.mark.parametrize(
    ("form", "bounds"),
    [
        ({}, (0.1, 180.0)),
        ({"scale_preset": "wide"}, (1.0, 180.0)),
        ({"scale_preset": "very-wide"}, (10.0, 180.0)),
        ({"scale_preset": "tiny"}, (0.0333, 0.1667)),
        (
            {
                "scale_preset": "tiny",
                "scale_hint": "on",
                "scale_units": "arcsecperpix",
                "scale_lower": "1",
                "scale_upper": "2",
            },
            (1.0, 2.0),
        ),
    ],
)
def test_scale_presets_as_on_nova(
    client: FlaskClient, form: dict[str, str], bounds: tuple[float, float]
) -> None:
    response = client.post("/upload", data={"url": "https://example.org/a.jpg", **form})
    assert response.status_code == 303
    submission = db.session.scalars(select(Submission)).one()
    assert (submission.scale_lower, submission.scale_upper) == bounds
    expected_units = "arcsecperpix" if "scale_hint" in form else "degwidth"
    assert (submission.scale_units, submission.scale_type) == (expected_units, "ul")
