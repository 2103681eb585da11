"""nova's JSON API: exact answers, every client's request style, validation, results."""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from nova.db.models import (
    RANDOM_ID_HIGH,
    RANDOM_ID_LOW,
    Album,
    ApiSession,
    Job,
    Submission,
    UserImage,
    utcnow,
)
from nova.extensions import db
from tests.support.api import api_call, api_login
from tests.support.client_wire import astroimagej_body, client_py_body, dotnet_body, qt_body
from tests.support.processes import run_worker

MakeUser = Callable[[str], tuple[int, str]]
READ_ENDPOINTS = [
    "jobs/{job}",
    "jobs/{job}/calibration",
    "jobs/{job}/info",
    "jobs/{job}/tags",
    "jobs/{job}/machine_tags",
    "jobs/{job}/objects_in_field",
    "jobs/{job}/annotations",
    "submissions/{sub}",
]


def count_submissions() -> int:
    return db.session.scalar(select(func.count()).select_from(Submission)) or 0


def test_login_answers_exactly_as_nova(client: FlaskClient, make_user: MakeUser) -> None:
    _, key = make_user("ann@example.org")
    assert api_call(client, "login", None) == {"status": "error", "errormessage": "no json"}
    assert api_call(client, "login", None, method="GET")["errormessage"] == "no json"
    response = client.post("/api/login", data={"request-json": "{not json"})
    assert json.loads(response.data) == {
        "status": "error",
        "errormessage": 'failed to parse JSON: "{not json"',
    }
    assert api_call(client, "login", {})["errormessage"] == 'need "apikey"'
    assert api_call(client, "login", {"apikey": None})["errormessage"] == 'need "apikey"'
    assert api_call(client, "login", {"apikey": "wrong"})["errormessage"] == "bad apikey"
    assert api_call(client, "login", {"apikey": 12})["errormessage"] == "bad apikey"
    response = client.post("/api/login/", data={"request-json": json.dumps({"apikey": key})})
    assert response.status_code == 200  # trailing slash: no redirect
    assert response.headers["Content-Type"] == "text/plain"
    body = response.get_data(as_text=True)
    result = json.loads(body)
    assert body == json.dumps(result)  # json.dumps separators, as nova
    assert result["status"] == "success"
    assert result["message"] == "authenticated user: ann@example.org"
    assert result["session"].isalnum() and len(result["session"]) == 32
    assert "NovaSession=" in response.headers["Set-Cookie"]
    assert key.isalnum() and key.lower() == key


def test_session_errors_use_novas_texts(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    _, key = make_user("ann@example.org")
    assert (
        api_call(client, "upload", {"x": [1], "y": [1]})["errormessage"] == 'no "session" in JSON.'
    )
    assert (
        api_call(client, "upload", {"session": "nosuchkey"})["errormessage"]
        == 'no session with key "nosuchkey"'
    )
    session_key = api_login(client, key)
    db.session.get(ApiSession, session_key).expires_at = utcnow()  # type: ignore[union-attr]
    db.session.commit()
    assert api_call(client, "upload", {"session": session_key, "x": [1], "y": [1]}) == {
        "status": "error",
        "errormessage": "user is not authenticated.",
    }
    assert (
        api_call(client, "myjobs/", {"session": session_key})["errormessage"]
        == "user is not authenticated."
    )
    assert count_submissions() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"scale_units": "parsecs"}, "invalid scale_units"),
        ({"scale_type": "ev", "scale_est": 10}, "invalid scale_est"),
        ({"scale_lower": 10, "scale_upper": 1}, "invalid scale_upper"),
        ({"center_ra": 10, "center_dec": 20}, "invalid radius"),
        ({"center_ra": 400, "center_dec": 20, "radius": 1}, "invalid center_ra"),
        ({"parity": 5}, "invalid parity"),
        ({"parity": "1.5"}, "invalid parity"),
        ({"downsample_factor": "two"}, "invalid downsample_factor"),
        ({"tweak_order": 12}, "invalid tweak_order"),
        ({"crpix_center": "perhaps"}, "invalid crpix_center"),
        ({"publicly_visible": "yes"}, "invalid publicly_visible"),
        ({"allow_commercial_use": "sa"}, "invalid allow_commercial_use"),
        ({"allow_modifications": "maybe"}, "invalid allow_modifications"),
        ({"album": "No such album"}, 'Failed to find an Album with title "No such album"'),
        ({"x": [1, 2], "y": [1]}, '"x" and "y" lists must be the same length'),
        ({"x": "1,2", "y": [1, 2]}, 'Failed to parse JSON "x" and "y" values'),
        ({"x": [1, "a"], "y": [1, 2]}, 'Failed to parse JSON "x" and "y" values'),
        ({"x": [1, None], "y": [1, 2]}, 'Failed to parse JSON "x" and "y" values'),
        ({"x": [], "y": []}, 'Failed to parse JSON "x" and "y" values'),
        ({"x": [1, 2]}, 'Failed to parse JSON "x" and "y" values'),
        ({}, 'no file: send the image as a "file" part, or "x" and "y" lists'),
    ],
)
def test_invalid_upload_arguments_are_refused_and_create_nothing(
    app: Flask, client: FlaskClient, make_user: MakeUser, args: dict[str, object], message: str
) -> None:
    _, key = make_user("ann@example.org")
    session_key = api_login(client, key)
    result = api_call(client, "upload", {"session": session_key, **args})
    assert result["status"] == "error"
    assert str(result["errormessage"]).startswith(message), result
    assert count_submissions() == 0
    assert not list((Path(app.config["DATA_DIR"]) / "uploads").rglob("*.*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, 'need "url" (or "x" and "y" lists)'),
        ({"url": "file:///etc/passwd"}, "The URL must start with http:// or https://"),
        ({"url": 5}, 'need "url"'),
        (
            {"url": "http://example.org/a.jpg", "radius": -1, "center_ra": 1, "center_dec": 1},
            "invalid radius",
        ),
    ],
)
def test_invalid_url_uploads(
    client: FlaskClient, make_user: MakeUser, args: dict[str, object], message: str
) -> None:
    _, key = make_user("ann@example.org")
    result = api_call(client, "url_upload", {"session": api_login(client, key), **args})
    assert str(result["errormessage"]).startswith(message)
    assert count_submissions() == 0


def test_values_nova_dropped_are_kept_and_strings_become_booleans(
    client: FlaskClient, make_user: MakeUser
) -> None:
    _, key = make_user("ann@example.org")
    args = {
        "session": api_login(client, key),
        "url": "https://example.org/sky.fits",
        "center_ra": 0,
        "center_dec": 0,
        "radius": 3,
        "scale_lower": 0,
        "scale_upper": 2,
        "crpix_center": "false",
        "invert": "true",
        "downsample_factor": None,
    }
    result = api_call(client, "url_upload", args)
    assert result["status"] == "success" and "hash" not in result
    submission = db.session.get(Submission, result["subid"])
    assert (submission.center_ra, submission.center_dec, submission.scale_lower) == (0, 0, 0)
    assert (submission.crpix_center, submission.invert) == (False, True)
    assert submission.downsample_factor == 2  # null means "not given"
    assert submission.original_filename == "sky.fits" and submission.via_api


STAR_TEXT = b"# X Y\n10 20\n30 40\n50 60\n"


@pytest.mark.parametrize(
    ("style", "sent_name"),
    [
        (client_py_body, "/home/ann/sky/stars.xy"),
        (qt_body, "C:\\Users\\ann\\AppData\\Local\\Temp\\stars.xy"),
        (dotnet_body, "stars.xy"),
    ],
)
def test_multipart_bodies_of_every_client_style(
    client: FlaskClient,
    make_user: MakeUser,
    style: Callable[..., tuple[bytes, str]],
    sent_name: str,
) -> None:
    _, key = make_user("ann@example.org")
    json_text = json.dumps(
        {
            "session": api_login(client, key),
            "publicly_visible": "n",
            "allow_commercial_use": "n",
            "allow_modifications": "n",
        }
    )
    body, content_type = style(json_text, sent_name, STAR_TEXT)
    for path in ("/api/upload", "/api/upload/"):
        response = client.post(path, data=body, content_type=content_type)
        assert response.status_code == 200
        result = json.loads(response.data)
        assert result["status"] == "success", result
        assert isinstance(result["subid"], int)
        assert result["hash"] == hashlib.sha1(STAR_TEXT).hexdigest()
        submission = db.session.get(Submission, result["subid"])
        assert submission.original_filename == "stars.xy"
        assert submission.publicly_visible == "n"


def test_astroimagej_multipart_with_a_bare_boundary_holding_equals_signs(
    client: FlaskClient, make_user: MakeUser
) -> None:
    """Werkzeug alone reads AstroImageJ's bare boundary "====...==" as cut short and finds
    no parts; the upload must arrive whole, its star list and arguments intact."""
    _, key = make_user("ann@example.org")
    request_json = json.dumps(
        {"publicly_visible": "n", "image_width": 100, "session": api_login(client, key)},
        separators=(",", ":"),
    )
    stars = "10.0 \t 20.0\r\n30.0 \t 40.0\r\n50.0 \t 60.0\r\n\r\n"
    body, content_type = astroimagej_body(request_json, stars)
    assert "boundary=" + "=" * 16 in content_type  # bare, as AstroImageJ sends it
    result = json.loads(client.post("/api/upload", data=body, content_type=content_type).data)
    assert result["status"] == "success", result
    submission = db.session.get(Submission, result["subid"])
    assert (submission.original_filename, submission.publicly_visible) == ("maxima.tbl", "n")
    assert submission.image_width == 100
    assert result["hash"] == hashlib.sha1(stars[:-2].encode()).hexdigest()


def test_requests_style_upload_with_no_part_content_type(
    client: FlaskClient, make_user: MakeUser
) -> None:
    _, key = make_user("ann@example.org")
    data = {
        "request-json": json.dumps({"session": api_login(client, key)}),
        "file": (io.BytesIO(STAR_TEXT), "stars.xy", ""),
    }
    result = json.loads(client.post("/api/upload", data=data).data)
    assert result["status"] == "success"


def xyls_columns(apod: Path) -> tuple[list[float], list[float]]:
    with fits.open(apod / "apod4.xyls") as hdus:
        return [float(v) for v in hdus[1].data["X"]], [float(v) for v in hdus[1].data["Y"]]


@pytest.mark.engine
def test_star_lists_four_ways_solve(client: FlaskClient, make_user: MakeUser, apod: Path) -> None:
    _, key = make_user("ann@example.org")
    session_key = api_login(client, key)
    xs, ys = xyls_columns(apod)
    hints = {
        "scale_units": "degwidth",
        "scale_lower": 25,
        "scale_upper": 40,
        "image_width": 719,
        "image_height": 507,
    }
    subids = []
    # 1. JSON lists to /api/upload without a file (client.py --upload-xy).
    subids.append(
        api_call(client, "upload", {"session": session_key, "x": xs, "y": ys, **hints})["subid"]
    )
    # 2. JSON lists to /api/url_upload without a url (astroquery).
    subids.append(
        api_call(client, "url_upload", {"session": session_key, "x": xs, "y": ys, **hints})["subid"]
    )
    # 3. A FITS table X, Y, MAG_AUTO (StellarSolver), with no size in its header.
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="X", format="E", array=np.array(xs)),
            fits.Column(name="Y", format="E", array=np.array(ys)),
            fits.Column(name="MAG_AUTO", format="E", array=np.linspace(1, 9, len(xs))),
        ]
    )
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    # 4. A text list "# X Y" (a N.I.N.A. derivative).
    text = ("# X Y\n" + "".join(f"{x} {y}\n" for x, y in zip(xs, ys, strict=True))).encode()
    for name, data in (("solver.xyls", buffer.getvalue()), ("upload.xy", text)):
        form = {
            "request-json": json.dumps({"session": session_key, **hints}),
            "file": (io.BytesIO(data), name),
        }
        subids.append(json.loads(client.post("/api/upload", data=form).data)["subid"])
    run_worker()
    for subid in subids:
        jobs = api_call(client, f"submissions/{subid}", method="GET")["jobs"]
        calibration = api_call(client, f"jobs/{jobs[0]}/calibration", method="GET")
        assert abs(calibration["dec"] - 56.713) < 0.05, (subid, calibration)
        image = db.session.get(
            UserImage, api_call(client, f"submissions/{subid}")["user_images"][0]
        )
        assert (image.kind, image.width, image.height) == ("xylist", 719, 507)


@pytest.mark.engine
def test_a_solve_seen_through_every_endpoint(
    client: FlaskClient, make_user: MakeUser, apod: Path
) -> None:
    user_id, key = make_user("ann@example.org")
    session_key = api_login(client, key)
    form = {
        "request-json": json.dumps(
            {
                "session": session_key,
                "scale_units": "degwidth",
                "scale_lower": 25,
                "scale_upper": 40,
            }
        ),
        "file": ((apod / "apod4.jpg").open("rb"), "apod4.jpg"),
    }
    upload = json.loads(client.post("/api/upload", data=form).data)
    subid = upload["subid"]
    assert upload["hash"] == hashlib.sha1((apod / "apod4.jpg").read_bytes()).hexdigest()
    waiting = api_call(client, f"submissions/{subid}", method="GET")
    assert waiting == {
        "user": user_id,
        "processing_started": "None",
        "processing_finished": "None",
        "user_images": [],
        "images": [],
        "jobs": [],
        "job_calibrations": [],
        # Nova's keys until it ends (nova.services.status): first among the uploads to be read.
        "queue_position": 0,
        "eta_seconds": None,
    }
    run_worker()
    status = api_call(client, f"submissions/{subid}", method="GET")
    assert set(status) == {
        "user",
        "processing_started",
        "processing_finished",
        "user_images",
        "images",
        "jobs",
        "job_calibrations",
    }
    assert time.strptime(status["processing_finished"][:19], "%Y-%m-%d %H:%M:%S")
    job_id = status["jobs"][0]
    assert isinstance(job_id, int) and RANDOM_ID_LOW <= job_id <= RANDOM_ID_HIGH
    assert status["job_calibrations"][0][0] == job_id
    # Every read endpoint: GET and POST (with a session, as client.py sends), with and
    # without a trailing slash, never a redirect, always text/plain JSON.
    for template in READ_ENDPOINTS:
        endpoint = template.format(job=job_id, sub=subid)
        answers = []
        for suffix in ("", "/"):
            answers.append(api_call(client, endpoint + suffix, method="GET"))
            answers.append(api_call(client, endpoint + suffix, {"session": session_key}))
        assert all(answer == answers[0] for answer in answers), endpoint
    assert api_call(client, f"jobs/{job_id}") == {"status": "success"}
    calibration = api_call(client, f"jobs/{job_id}/calibration")
    assert list(calibration) == [
        "ra",
        "dec",
        "width_arcsec",
        "height_arcsec",
        "radius",
        "pixscale",
        "orientation",
        "parity",
    ]
    assert calibration["parity"] in (1.0, -1.0)
    assert calibration["width_arcsec"] == pytest.approx(calibration["pixscale"] * 719)
    info = api_call(client, f"jobs/{job_id}/info")
    assert info["status"] == "success" and info["original_filename"] == "apod4.jpg"
    assert set(info["calibration"]) == {"ra", "dec", "radius", "pixscale", "orientation", "parity"}
    assert "Part of the constellation Ursa Major (UMa)" in info["machine_tags"]
    assert info["tags"] == info["machine_tags"] == info["objects_in_field"]
    assert "The star Dubhe" in info["objects_in_field"]
    assert api_call(client, f"jobs/{job_id}/machine_tags")["tags"] == info["machine_tags"]
    annotations = api_call(client, f"jobs/{job_id}/annotations")["annotations"]
    dubhe = [a for a in annotations if a["names"][0].startswith("Dubhe")]
    assert dubhe and dubhe[0]["type"] == "bright"
    assert set(dubhe[0]) == {"type", "names", "pixelx", "pixely", "radius", "vmag"}
    assert dubhe[0]["vmag"] == pytest.approx(2.0, abs=0.2)  # Tycho-2 VT of Dubhe
    assert 0 < dubhe[0]["pixelx"] < 719 and 0 < dubhe[0]["pixely"] < 507
    bright = sorted(a["vmag"] for a in annotations if a["type"] == "bright" and "vmag" in a)
    two = api_call(client, f"jobs/{job_id}/annotations?nbright=2")["annotations"]
    assert sorted(a["vmag"] for a in two if a["type"] == "bright") == bright[:2]
    assert api_call(client, "myjobs/", {"session": session_key}) == {
        "jobs": [job_id],
        "status": "success",
    }
    assert api_call(client, "myjobs", {"session": session_key})["jobs"] == [job_id]
    exact = api_call(client, "jobs_by_tag?query=the star dubhe&exact=yes")
    assert exact == {"job_ids": [job_id]}
    assert api_call(client, "jobs_by_tag?query=Ursa Maj")["job_ids"] == [job_id]
    assert api_call(client, "jobs_by_tag?query=Orion")["job_ids"] == []
    assert api_call(client, "submission_images", {"session": session_key, "subid": subid}) == {
        "status": "success",
        "image_ids": status["user_images"],
    }
    # Product files: exact content types, FITS that opens.
    for name in ("wcs_file", "rdls_file", "axy_file", "corr_file"):
        for path in (f"/{name}/{job_id}", f"/{name}/{job_id}/"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["Content-Type"] == "application/fits"
            with fits.open(io.BytesIO(response.data)) as hdus:
                assert hdus[0].header["SIMPLE"]
    header = fits.Header.fromstring(client.get(f"/wcs_file/{job_id}").get_data(as_text=True))
    assert header["CTYPE1"] == "RA---TAN-SIP" and header["A_ORDER"] == 2
    log = client.get(f"/joblog/{job_id}")
    assert log.headers["Content-Type"].startswith("text/plain") and b"solved with" in log.data


def test_unsupported_file_yields_a_failed_job_so_pollers_stop(
    client: FlaskClient, make_user: MakeUser
) -> None:
    _, key = make_user("ann@example.org")
    form = {
        "request-json": json.dumps({"session": api_login(client, key)}),
        "file": (io.BytesIO(b"%PDF-1.5 not a picture"), "notes.fits"),
    }
    subid = json.loads(client.post("/api/upload", data=form).data)["subid"]
    run_worker()
    status = api_call(client, f"submissions/{subid}")
    assert status["error_message"].startswith("This file's type is not supported.")
    assert status["processing_finished"] != "None"
    job_id = status["jobs"][0]
    assert api_call(client, f"jobs/{job_id}") == {"status": "failure"}
    assert api_call(client, f"jobs/{job_id}/calibration") == {
        "error": f"no calibration data available for job {job_id}"
    }
    info = api_call(client, f"jobs/{job_id}/info")
    assert "calibration" not in info and info["status"] == "failure"


def test_unknown_ids_answer_json_404(client: FlaskClient) -> None:
    for template in READ_ENDPOINTS:
        response = client.get("/api/" + template.format(job=123, sub=123))
        assert response.status_code == 404
        assert response.headers["Content-Type"] == "text/plain"
        assert json.loads(response.data)["status"] == "error"
    assert json.loads(client.get("/api/no/such/thing").data)["status"] == "error"


def test_job_ids_are_random_and_avoid_every_id_in_use(
    app: Flask, client: FlaskClient, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = make_user("ann@example.org")
    session_key = api_login(client, key)

    def new_ids() -> tuple[int, int]:
        subid = api_call(client, "upload", {"session": session_key, "x": [1.0], "y": [1.0]})[
            "subid"
        ]
        run_worker()
        return subid, api_call(client, f"submissions/{subid}", method="GET")["jobs"][0]

    first_sub, first_job = new_ids()
    # The generator is made to draw the submission id already taken first: it is skipped
    # (submissions and jobs share the generator; jobs are drawn in the worker process).
    draws = iter([first_sub - RANDOM_ID_LOW])
    real = secrets.randbelow
    monkeypatch.setattr(secrets, "randbelow", lambda n: next(draws, None) or real(n))
    second_sub, second_job = new_ids()
    assert second_sub != first_sub and second_job != first_job
    assert next(draws, None) is None  # the taken id was drawn, and refused
    assert db.session.get(Job, first_job) is not None and db.session.get(Job, second_job)
    database_ids = db.session.scalars(select(Submission.id)).all()
    assert sorted(database_ids) == sorted([first_sub, second_sub])


def test_albums_are_looked_up_among_the_callers_own(
    client: FlaskClient, make_user: MakeUser
) -> None:
    ann_id, ann_key = make_user("ann@example.org")
    _, bob_key = make_user("bob@example.org")
    db.session.add(Album(user_id=ann_id, title="Messier"))
    db.session.commit()
    bob = api_call(
        client,
        "upload",
        {"session": api_login(client, bob_key), "album": "Messier", "x": [1.0], "y": [2.0]},
    )
    assert bob["errormessage"] == 'Failed to find an Album with title "Messier"'
    ann = api_call(
        client,
        "upload",
        {"session": api_login(client, ann_key), "album": "Messier", "x": [1.0], "y": [2.0]},
    )
    assert ann["status"] == "success"
    run_worker()
    album = db.session.scalars(select(Album)).one()
    assert [image.submission_id for image in album.images] == [ann["subid"]]


def test_cli_creates_users_and_resets_keys(app: Flask, client: FlaskClient) -> None:
    from nova.cli import main

    runner = app.test_cli_runner()

    def nova(*args: str) -> Any:
        return runner.invoke(main, list(args))

    created = nova("create-user", "cli@example.org")
    assert created.exit_code == 0, created.output
    old_key = created.output.split("API key: ")[1].strip()
    assert api_call(client, "login", {"apikey": old_key})["status"] == "success"
    assert nova("create-user", "cli@example.org").exit_code != 0
    reset = nova("reset-api-key", "cli@example.org")
    new_key = reset.output.split("API key: ")[1].strip()
    assert new_key != old_key and new_key.isalnum()
    assert api_call(client, "login", {"apikey": old_key})["errormessage"] == "bad apikey"
    assert api_call(client, "login", {"apikey": new_key})["status"] == "success"
    assert "no user" in nova("reset-api-key", "nobody@example.org").output


# V magnitudes of the Big Dipper's stars (Yale Bright Star Catalogue / SIMBAD), to check the
# magnitudes Nova annotates against a source other than the engine's own table.
BIG_DIPPER_V = {
    "Dubhe": 1.79,
    "Merak": 2.37,
    "Phecda": 2.44,
    "Megrez": 3.31,
    "Alioth": 1.77,
    "Mizar": 2.23,
    "Alkaid": 1.86,
    "Alcor": 4.01,
}


def angular_distance(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    cos = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(r1 - r2)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


@pytest.mark.engine
def test_names_in_the_field_are_real_and_carry_catalogue_magnitudes(
    client: FlaskClient, make_user: MakeUser, apod: Path
) -> None:
    """apod4 (the Big Dipper) solved with a 20-45 degree hint: its SIP inverse folds stars
    from far away into the picture for plot-constellations; none of them may be named."""
    from astropy.wcs import WCS

    _, key = make_user("ann@example.org")
    form = {
        "request-json": json.dumps(
            {
                "session": api_login(client, key),
                "scale_units": "degwidth",
                "scale_lower": 20,
                "scale_upper": 45,
            }
        ),
        "file": ((apod / "apod4.jpg").open("rb"), "apod4.jpg"),
    }
    subid = json.loads(client.post("/api/upload", data=form).data)["subid"]
    run_worker()
    job_id = api_call(client, f"submissions/{subid}")["jobs"][0]
    calibration = api_call(client, f"jobs/{job_id}/calibration")
    header = fits.Header.fromstring(client.get(f"/wcs_file/{job_id}").get_data(as_text=True))
    wcs = WCS(header, relax=True, naxis=2)
    annotations = api_call(client, f"jobs/{job_id}/annotations")["annotations"]
    stars = [a for a in annotations if a["type"] == "bright"]
    assert len(stars) > 20
    for item in annotations:
        assert 0 <= item["pixelx"] <= 719 and 0 <= item["pixely"] <= 507, item
        ra, dec = wcs.all_pix2world([[item["pixelx"], item["pixely"]]], 1)[0]
        distance = angular_distance(ra, dec, calibration["ra"], calibration["dec"])
        assert distance <= calibration["radius"], (item["names"], distance)
    assert all("vmag" in star for star in stars)
    named = {star["names"][0].split(" / ")[0]: star["vmag"] for star in stars}
    for name, vmag in BIG_DIPPER_V.items():
        assert named[name] == pytest.approx(vmag, abs=0.3), name
    assert not [s for s in stars if "Hya" in " ".join(s["names"]) or "Cyg" in " ".join(s["names"])]
    five = api_call(client, f"jobs/{job_id}/annotations?nbright=5")["annotations"]
    five_stars = [a for a in five if a["type"] == "bright"]
    assert [s["vmag"] for s in five_stars] == sorted(s["vmag"] for s in stars)[:5]
    assert {s["names"][0].split(" / ")[0] for s in five_stars} == {
        "Alioth", "Dubhe", "Alkaid", "Mizar", "Merak"
    }  # fmt: skip
    # Names stay whole inside parentheses, in objects_in_field, tags and the page.
    objects = api_call(client, f"jobs/{job_id}/objects_in_field")["objects_in_field"]
    assert "The star Alioth (ε UMa / 77 UMa)" in objects
    assert "The star Mizar (ζ UMa / 79 UMa)" in objects
    assert not [name for name in objects if name.count("(") != name.count(")")]
    assert api_call(client, f"jobs/{job_id}/tags")["tags"] == objects
    image_id = api_call(client, f"submissions/{subid}")["user_images"][0]
    page = client.get(f"/user_images/{image_id}").get_data(as_text=True)
    assert "The star Alioth (ε UMa / 77 UMa)" in page
