"""Hostile requests to pages and the API (issue 16: M2, L1, L2, L3, L5, L6, L8, L10): no open
redirect, no account enumeration, no HTTP 500 for odd numbers, NUL bytes or broken stored
files, no server paths in what users see, nothing left behind by a refused archive, form
fields as large as the star limit needs, and the security headers."""

from __future__ import annotations

import io
import json
import re
import statistics
import tarfile
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from nova.db.models import Submission, User, UserImage
from nova.extensions import db
from nova.services import storage
from tests.integration.test_site import sign_up
from tests.integration.test_web import stored_uploads
from tests.support.api import api_login
from tests.support.figures import record_figure
from tests.support.paths import REPO
from tests.support.processes import run_worker
from tests.support.settings import change_settings

STARS = b"".join(f"{10 + 7 * i % 500} {20 + 11 * i % 400}\n".encode() for i in range(40))


def form_file(client: FlaskClient, data: bytes, name: str = "stars.txt"):  # type: ignore[no-untyped-def]
    return client.post(
        "/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data"
    )


def test_sign_in_never_redirects_off_site(client: FlaskClient) -> None:
    sign_up(client, "ann@example.org")
    client.post("/signout")
    for target in (
        "/%09/evil.example/",
        "/%0a/evil.example/",
        "/\\evil.example/",
        "/%5Cevil.example/",
        "/%0d%0aSet-Cookie:x=1",
        "/ /evil.example",
        "//evil.example",
        "https://evil.example/",
    ):
        response = client.post(
            f"/signin?next={target}", data={"email": "ann@example.org", "password": "correct horse"}
        )
        assert response.status_code == 302, (target, response.status_code)
        location = response.headers["Location"]
        assert location == "/dashboard", (target, location)
        client.post("/signout")
    response = client.post(
        "/signin?next=/explore?page=2",
        data={"email": "ann@example.org", "password": "correct horse"},
    )
    assert response.headers["Location"] == "/explore?page=2"


def test_accounts_cannot_be_enumerated(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """L1: sign-up answers alike whether or not the email has an account, sign-in does the
    same work for an unknown email as for a wrong password, and user pages show no email."""
    from nova.web import account

    hashes: list[str] = []  # what each request computed: "make" or "check"

    def counted(kind: str, function):  # type: ignore[no-untyped-def]
        def wrapper(*args: object, **kwargs: object) -> object:
            hashes.append(kind)
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        account, "generate_password_hash", counted("make", account.generate_password_hash)
    )
    monkeypatch.setattr(
        account, "check_password_hash", counted("check", account.check_password_hash)
    )
    account._decoy_hash()  # made once per process, before anything is counted

    sign_up_ms: list[float] = []

    def sign_up_answer(email: str, password: str) -> tuple[object, ...]:
        hashes.clear()
        browser = app.test_client()
        started = time.perf_counter()
        response = browser.post(
            "/signup", data={"email": email, "password": password, "confirm": password}
        )
        sign_up_ms.append((time.perf_counter() - started) * 1000)
        follow = browser.get(response.headers.get("Location", "/signup"))
        page = follow.get_data(as_text=True).replace(email, "EMAIL")
        page = re.sub(r'name="csrf_token"[^>]*', "", page)
        return response.status_code, response.headers.get("Location"), page, tuple(hashes)

    app.test_client().get("/signin")  # the app's first request compiles its templates
    new = sign_up_answer("ann.secret@example.org", "correct horse")
    existing = sign_up_answer("ann.secret@example.org", "x" * 9)
    assert new == existing, "the same answer, after the same work, for an existing email"
    assert new[0] == 302 and new[3] == ("make",)
    record_figure(f"sign-up, new email: {sign_up_ms[0]:.0f} ms; existing email: "
                  f"{sign_up_ms[1]:.0f} ms (one password hash each)")  # fmt: skip
    user = db.session.scalars(select(User)).one()
    assert account.check_password_hash(user.password_hash, "correct horse"), "left as it was"
    assert "ann.secret" not in client.get(f"/users/{user.id}").get_data(as_text=True)
    # The real owner of a new account is not stranded: the password chosen signs in, and the
    # first sign-in shows the API key.
    first = app.test_client().post(
        "/signin", data={"email": "ann.secret@example.org", "password": "correct horse"}
    )
    assert 'id="api-key"' in first.get_data(as_text=True)

    def sign_in_work(email: str, attempt: int) -> tuple[float, tuple[str, ...]]:
        hashes.clear()
        started = time.perf_counter()
        answer = app.test_client().post(
            "/signin",
            data={"email": email, "password": "wrong!"},
            # From addresses of their own: NOVA_LOGIN_FAILURE_LIMIT counts per address.
            environ_base={"REMOTE_ADDR": f"198.51.100.{attempt}"},
        )
        assert "Wrong email or password." in answer.get_data(as_text=True)
        return time.perf_counter() - started, tuple(hashes)

    known = [sign_in_work("ann.secret@example.org", attempt) for attempt in range(5)]
    unknown = [sign_in_work("nobody@example.org", attempt) for attempt in range(5)]
    assert {work for _, work in known} == {work for _, work in unknown} == {("check",)}
    known_ms = statistics.median(seconds for seconds, _ in known) * 1000
    unknown_ms = statistics.median(seconds for seconds, _ in unknown) * 1000
    record_figure(f"sign-in, wrong password: {known_ms:.0f} ms; unknown email: "
                  f"{unknown_ms:.0f} ms (medians of 5; one password hash each)")  # fmt: skip


def test_odd_page_numbers_and_next_values_get_no_500(client: FlaskClient) -> None:
    sign_up(client, "ann@example.org")
    user = db.session.scalars(select(User)).one()
    for path in ("/explore", f"/users/{user.id}", "/dashboard"):
        for page in ("99999999999999999999", "-5", "1e9", "２"):
            response = client.get(f"{path}?page={page}")
            assert response.status_code == 200, (path, page, response.status_code)
    client.post("/signout")
    response = client.post(
        "/signin?next=/x%0d%0aLocation:%20//evil.example",
        data={"email": "ann@example.org", "password": "correct horse"},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"


def test_a_stored_fits_shorter_than_its_header_gets_no_500(app: Flask, client: FlaskClient) -> None:
    """A FITS upload stored by an earlier release whose data is cut short: its pictures
    answer with the reason, never a server error."""
    assert form_file(client, STARS).status_code == 303
    submission = db.session.scalars(select(Submission)).one()
    cut = Path(app.config["DATA_DIR"]) / "cut.fits"
    header = "".join(
        f"{key:<8}= {value:>20}".ljust(80)
        for key, value in (("SIMPLE", "T"), ("BITPIX", "16"), ("NAXIS", "2"),
                           ("NAXIS1", "640"), ("NAXIS2", "480"))
    ) + "END".ljust(80)  # fmt: skip
    cut.write_bytes(header.ljust(2880).encode() + b"\0" * 10_000)
    image = UserImage(
        submission=submission,
        file_hash=storage().store_file(cut),
        kind="fits",
        width=640,
        height=480,
        publicly_visible="y",
    )
    db.session.add(image)
    db.session.commit()
    for route in ("image", "display_image", "thumbnail_of_image"):
        response = client.get(f"/{route}/{image.id}")
        assert response.status_code == 422, (route, response.status_code)
        text = response.get_data(as_text=True)
        assert "truncated" in text and str(app.config["DATA_DIR"]) not in text


def test_nul_characters_are_refused_without_a_server_error(client: FlaskClient, make_user) -> None:  # type: ignore[no-untyped-def]
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    answers = [
        form_file(client, STARS, "stars\x00.txt"),
        client.get("/search?q=M%0042"),
        client.get("/tags?tag=a%00b"),
        client.get("/api/jobs_by_tag?query=a%00b"),
        client.post("/signin", data={"email": "a\x00@example.org", "password": "x" * 9}),
        client.post(
            "/signup", data={"email": "a\x00@example.org", "password": "x" * 9, "confirm": "x" * 9}
        ),
        client.post(
            "/api/upload",
            data={
                "request-json": json.dumps({"session": session}),
                "file": (io.BytesIO(STARS), "a\x00b.txt"),
            },
        ),
    ]
    assert [answer.status_code for answer in answers] == [400] * len(answers)
    assert json.loads(answers[3].get_data(as_text=True))["status"] == "error"
    assert db.session.scalars(select(Submission)).all() == []


def test_users_never_see_server_paths(app: Flask, client: FlaskClient, apod: Path) -> None:
    data_dir = str(app.config["DATA_DIR"])
    refused = form_file(client, b"\x89PNG\r\n\x1a\n" + b"garbage" * 100, "broken.png")
    assert refused.status_code == 303
    # A real star list, which the engine solves in about a second (made-up stars would
    # keep it searching until the job's time limit).
    assert form_file(client, (apod / "apod4.xyls").read_bytes(), "stars.xyls").status_code == 303
    run_worker()
    db.session.rollback()
    by_name = {row.original_filename: row for row in db.session.scalars(select(Submission))}
    broken, stars = by_name["broken.png"], by_name["stars.xyls"]
    assert broken.error_message and data_dir not in broken.error_message
    assert "'/" not in broken.error_message
    job = stars.user_images[0].jobs[0]
    log = client.get(f"/joblog/{job.id}").get_data(as_text=True)
    assert "astrometry-engine" in log or "solve-field" in log or "extract" in log, log[:500]
    assert data_dir not in log and "/usr/" not in log
    page = client.get(f"/user_images/{stars.user_images[0].id}").get_data(as_text=True)
    assert data_dir not in page
    state = client.get(f"/status/{stars.id}/state").get_json()
    assert data_dir not in json.dumps(state)


def test_a_refused_archive_leaves_nothing_in_the_store(app: Flask, client: FlaskClient) -> None:
    change_settings(app, MAX_ARCHIVE_MEMBERS=2)
    import os

    os.environ["NOVA_MAX_ARCHIVE_MEMBERS"] = "2"  # the worker reads the same setting
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for number in range(4):  # two usable members are stored, then the third refuses
                member = STARS + f"{number} {number}\n".encode()
                info = tarfile.TarInfo(f"list-{number}.txt")
                info.size = len(member)
                archive.addfile(info, io.BytesIO(member))
        assert form_file(client, buffer.getvalue(), "lists.tar").status_code == 303
        run_worker()
    finally:
        del os.environ["NOVA_MAX_ARCHIVE_MEMBERS"]
    db.session.rollback()
    submission = db.session.scalars(select(Submission)).one()
    assert "more than 2 members" in (submission.error_message or "")
    assert len(stored_uploads(app)) == 1, "only the archive itself, which its row names"


def test_form_fields_as_large_as_the_star_limit_needs(client: FlaskClient, make_user) -> None:  # type: ignore[no-untyped-def]
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    xs = [1234.56789012345 + i for i in range(60_000)]
    raw = json.dumps({"session": session, "x": xs, "y": xs})
    assert len(raw) > 2_000_000
    response = client.post(
        "/api/upload",
        data={"request-json": raw},
        content_type="multipart/form-data",  # as nova's client.py sends it
    )
    answer = json.loads(response.get_data(as_text=True))
    assert answer["status"] == "success", answer
    huge = client.post(
        "/upload", data={"scale_lower": "1" * 20_000_000}, content_type="multipart/form-data"
    )
    assert huge.status_code == 413
    assert "form field is larger than" in huge.get_data(as_text=True)


def test_security_headers_and_private_caching(app: Flask, client: FlaskClient, apod: Path) -> None:
    page = client.get("/upload")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors" in policy
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert "camera=()" in page.headers["Permissions-Policy"]
    assert "Strict-Transport-Security" in (REPO / "deploy" / "Caddyfile").read_text()
    sign_up(client, "ann@example.org")
    upload = client.post(
        "/upload",
        # A real star list: solved in about a second, so the job has its log at once.
        data={
            "file": (io.BytesIO((apod / "apod4.xyls").read_bytes()), "s.xyls"),
            "publicly_visible": "n",
        },
        content_type="multipart/form-data",
    )
    assert upload.status_code == 303
    run_worker()
    db.session.rollback()
    image = db.session.scalars(select(UserImage)).one()
    html = client.get(f"/user_images/{image.id}")
    assert "private" in html.headers["Cache-Control"]
    text = html.get_data(as_text=True)
    for inline in ("onsubmit=", "onclick=", "<script>", "style="):
        assert inline not in text, inline
    log = client.get(f"/joblog/{image.jobs[0].id}")
    assert log.status_code == 200 and "private" in log.headers["Cache-Control"]
