"""Rate limits on uploads and sign-ins, and sign-in throttling per account, counted in the
real redis; behind a proxy the client's address comes from X-Forwarded-For."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from nova import create_app
from nova.db.schema import init_database
from nova.extensions import db
from tests.support.api import api_call, api_login
from tests.support.db import drop_everything

STARS = {"x": [10.0, 20.0, 30.0, 40.0, 50.0], "y": [5.0, 60.0, 15.0, 70.0, 25.0]}


@pytest.fixture
def limited_app(nova_env: dict[str, str]) -> Iterator[Callable[..., Flask]]:
    """Apps with small limits, over this test's database and the session's redis."""
    made: list[Flask] = []

    def make(**limits: str) -> Flask:
        app = create_app({"TESTING": True, "WTF_CSRF_ENABLED": False, **limits})
        if not made:
            with app.app_context():
                drop_everything()
                init_database()
        made.append(app)
        return app

    yield make
    with made[0].app_context():
        db.session.remove()
        drop_everything()
        db.engine.dispose()


def new_user(app: Flask, email: str, password: str | None = None) -> str:
    from werkzeug.security import generate_password_hash

    from nova.services.accounts import create_user

    with app.app_context():
        user, key = create_user(email)
        if password:
            user.password_hash = generate_password_hash(password)
        db.session.commit()
    return key


def upload_stars(client: FlaskClient, session: str) -> dict[str, object]:
    return api_call(client, "upload", {"session": session, **STARS})


def test_uploads_are_limited_per_api_key(limited_app: Callable[..., Flask]) -> None:
    app = limited_app(UPLOAD_RATE_LIMIT="3/minute")
    ann, bob = app.test_client(), app.test_client()
    ann_session = api_login(ann, new_user(app, "ann@example.org"))
    bob_session = api_login(bob, new_user(app, "bob@example.org"))
    accepted = [upload_stars(ann, ann_session)["status"] for _ in range(3)]
    assert accepted == ["success"] * 3
    response = ann.post(
        "/api/upload", data={"request-json": json.dumps({"session": ann_session, **STARS})}
    )
    # nova's error envelope, HTTP 200 as its clients expect, with when to try again.
    assert response.status_code == 200
    answer = json.loads(response.get_data(as_text=True))
    assert answer["status"] == "error"
    assert answer["errormessage"].startswith(
        "Too many uploads (limit: 3 per 1 minute); try again in "
    )
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # Another key from the same address has its own allowance.
    assert upload_stars(bob, bob_session)["status"] == "success"
    with app.app_context():
        from nova.db.models import Submission

        assert db.session.query(Submission).count() == 4  # the refused upload stored nothing


def test_anonymous_uploads_are_limited_per_address(limited_app: Callable[..., Flask]) -> None:
    app = limited_app(UPLOAD_RATE_LIMIT="2/minute")

    def post_from(address: str) -> int:
        client = app.test_client()
        response = client.post(
            "/upload",
            data={"upload_type": "url", "url": "https://example.org/sky.jpg"},
            environ_base={"REMOTE_ADDR": address},
        )
        return response.status_code

    assert [post_from("192.0.2.1") for _ in range(2)] == [303, 303]
    assert post_from("192.0.2.1") == 429
    assert post_from("192.0.2.2") == 303


def test_a_limit_is_shared_by_every_web_process(limited_app: Callable[..., Flask]) -> None:
    """Counts live in redis: two app instances (two gunicorn workers, or two hosts) share them."""
    first = limited_app(UPLOAD_RATE_LIMIT="2/minute")
    second = limited_app(UPLOAD_RATE_LIMIT="2/minute")
    key = new_user(first, "cy@example.org")
    one, two = first.test_client(), second.test_client()
    session = api_login(one, key)
    two.set_cookie("NovaSession", one.get_cookie("NovaSession").value)
    assert upload_stars(one, session)["status"] == "success"
    assert upload_stars(two, session)["status"] == "success"
    assert upload_stars(one, session)["status"] == "error"
    assert upload_stars(two, session)["status"] == "error"
    keys = redis.Redis.from_url(first.config["REDIS_URL"]).keys("*nova-limits*")
    assert keys, "the counts are kept in redis"


def test_api_logins_are_limited_per_address(limited_app: Callable[..., Flask]) -> None:
    app = limited_app(LOGIN_RATE_LIMIT="3/minute")
    key = new_user(app, "di@example.org")
    client = app.test_client()
    answers = [api_call(client, "login", {"apikey": "wrong"})["errormessage"] for _ in range(2)]
    assert answers == ["bad apikey", "bad apikey"]
    assert api_call(client, "login", {"apikey": key})["status"] == "success"
    refused = api_call(client, "login", {"apikey": key})
    assert refused["status"] == "error"
    assert refused["errormessage"].startswith("Too many sign-in attempts from your address")


def test_failed_sign_ins_lock_the_account_for_the_guessing_address_only(
    limited_app: Callable[..., Flask],
) -> None:
    """A guesser is stopped; a stranger's guesses never lock the owner out (issue 16, M9)."""
    app = limited_app(LOGIN_FAILURE_LIMIT="3/15 minutes")
    new_user(app, "ed@example.org", password="correct horse")
    new_user(app, "fay@example.org", password="battery staple")

    def sign_in(email: str, password: str, address: str = "198.51.100.7") -> tuple[int, str]:
        client = app.test_client()
        response = client.post(
            "/signin",
            data={"email": email, "password": password},
            environ_base={"REMOTE_ADDR": address},
        )
        return response.status_code, response.get_data(as_text=True)

    # A success does not count as a failure.
    assert sign_in("ed@example.org", "correct horse")[0] == 302
    stranger = "203.0.113.9"
    for attempt in range(3):
        code, page = sign_in("ed@example.org", f"guess {attempt}", address=stranger)
        assert code == 200 and "Wrong email or password." in page
    # The guessing address is throttled for this account, even with the right password...
    code, page = sign_in("ed@example.org", "correct horse", address=stranger)
    assert code == 429
    assert "Too many failed sign-ins for this account" in page
    # ...and the owner, elsewhere, is not.
    assert sign_in("ed@example.org", "correct horse")[0] == 302
    # Other accounts are not affected, not even from the guessing address.
    assert sign_in("fay@example.org", "battery staple", address=stranger)[0] == 302


def test_client_address_comes_from_the_proxy_only_when_configured(
    limited_app: Callable[..., Flask],
) -> None:
    direct = limited_app(LOGIN_RATE_LIMIT="1/minute")
    behind_caddy = limited_app(LOGIN_RATE_LIMIT="1/minute", PROXY_HOPS=1)

    def login_from(app: Flask, forwarded_for: str) -> str:
        client = app.test_client()
        answer = client.post(
            "/api/login",
            data={"request-json": json.dumps({"apikey": "x"})},
            headers={"X-Forwarded-For": forwarded_for},
        )
        return json.loads(answer.get_data(as_text=True))["errormessage"]

    # Not behind a proxy: a forged X-Forwarded-For does not buy a fresh allowance.
    assert login_from(direct, "192.0.2.10") == "bad apikey"
    assert login_from(direct, "192.0.2.11").startswith("Too many sign-in attempts")
    redis.Redis.from_url(direct.config["REDIS_URL"]).flushdb()
    # Behind one trusted proxy, each client address counts on its own.
    assert login_from(behind_caddy, "192.0.2.10") == "bad apikey"
    assert login_from(behind_caddy, "192.0.2.11") == "bad apikey"
    assert login_from(behind_caddy, "192.0.2.10").startswith("Too many sign-in attempts")


def test_uploads_are_accepted_while_redis_is_away(limited_app: Callable[..., Flask]) -> None:
    """The limits are skipped, not turned into errors, when their redis cannot be reached."""
    app = limited_app(UPLOAD_RATE_LIMIT="1/minute", REDIS_URL="redis://127.0.0.1:9/0")
    key = new_user(app, "gil@example.org")
    client = app.test_client()
    session = api_login(client, key)
    answers = [upload_stars(client, session) for _ in range(2)]
    assert [answer["status"] for answer in answers] == ["success", "success"]
    assert all(isinstance(answer["subid"], int) for answer in answers)


def test_limits_can_be_switched_off(limited_app: Callable[..., Flask]) -> None:
    app = limited_app(RATE_LIMITS=False, LOGIN_RATE_LIMIT="1/minute")
    key = new_user(app, "hal@example.org")
    client = app.test_client()
    answers = [api_call(client, "login", {"apikey": key})["status"] for _ in range(3)]
    assert answers == ["success"] * 3


def test_comments_tags_and_albums_are_rate_limited_per_account(
    limited_app: Callable[..., Flask],
) -> None:
    """Posting for others to read is limited like uploads (issue 16, L9)."""
    from nova.db.models import Comment, Submission, UserImage

    app = limited_app(CONTENT_RATE_LIMIT="2/minute")
    new_user(app, "ed@example.org", password="correct horse")
    client = app.test_client()
    assert (
        client.post(
            "/signin", data={"email": "ed@example.org", "password": "correct horse"}
        ).status_code
        == 302
    )
    with app.app_context():
        submission = Submission(original_filename="a.jpg")
        image = UserImage(submission=submission, kind="jpeg", width=10, height=10)
        db.session.add_all([submission, image])
        db.session.commit()
        image_id = image.id
    answers = [
        client.post(f"/user_images/{image_id}/comments", data={"text": f"nice {n}"}).status_code
        for n in range(3)
    ]
    assert answers == [302, 302, 429]
    refused = client.post(f"/user_images/{image_id}/comments", data={"text": "more"})
    assert "NOVA_CONTENT_RATE_LIMIT" in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(Comment).count() == 2


def test_album_descriptions_have_a_length_limit(limited_app: Callable[..., Flask]) -> None:
    from nova.db.models import Album

    app = limited_app()
    new_user(app, "ed@example.org", password="correct horse")
    client = app.test_client()
    client.post("/signin", data={"email": "ed@example.org", "password": "correct horse"})
    client.post("/dashboard/albums", data={"title": "Long", "description": "x" * 6000})
    page = client.get("/dashboard?tab=albums").get_data(as_text=True)
    assert "at most 5000 characters" in page
    client.post("/dashboard/albums", data={"title": "Short", "description": "M31 in October"})
    with app.app_context():
        assert [album.title for album in db.session.query(Album).all()] == ["Short"]
