"""Sessions that end (issue 16: M3, M5, M6): sign-out, a new password and a new API key end
every web session, remember cookie and API session at once, remember cookies rotate on use,
and /api/login never signs a browser in on another site's behalf."""

from __future__ import annotations

import io
import json
import re

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from nova.db.models import Submission
from nova.extensions import db
from nova.services.accounts import reset_api_key
from tests.integration.test_site import sign_in, sign_up

REMEMBER = "NovaRemember"
SESSION = "NovaSession"


def signed_in(client: FlaskClient) -> bool:
    return client.get("/dashboard").status_code == 200


def api_session_works(client: FlaskClient, key: str) -> bool:
    response = client.post("/api/myjobs", data={"request-json": json.dumps({"session": key})})
    return json.loads(response.get_data(as_text=True))["status"] == "success"


def api_login(client: FlaskClient, key: str, **headers: str) -> str:
    response = client.post(
        "/api/login", data={"request-json": json.dumps({"apikey": key})}, headers=headers
    )
    answer = json.loads(response.get_data(as_text=True))
    assert answer["status"] == "success", answer
    return str(answer["session"])


def cookie(client: FlaskClient, name: str) -> str:
    found = client.get_cookie(name)
    assert found is not None, f"no {name} cookie"
    return found.value


def browser_with(app: Flask, **cookies: str) -> FlaskClient:
    """Another browser holding copies of these cookies."""
    other = app.test_client()
    for name, value in cookies.items():
        other.set_cookie(name, value)
    return other


def test_sign_out_ends_every_session_and_old_cookies_sign_nobody_in(app: Flask) -> None:
    browser = app.test_client()
    key = sign_up(browser, "ann@example.org")
    browser.post("/signout")
    sign_in(browser, "ann@example.org")  # with "remember me": a remember cookie too
    api_key_session = api_login(browser, key)  # and the API session cookie of /api/login
    laptop = app.test_client()
    sign_in(laptop, "ann@example.org")
    copied_session = cookie(browser, SESSION)
    copied_remember = cookie(laptop, REMEMBER)  # unused: it still signs in
    assert signed_in(browser_with(app, **{SESSION: copied_session}))
    assert api_session_works(app.test_client(), api_key_session)

    browser.post("/signout")

    assert not signed_in(browser)
    assert not signed_in(browser_with(app, **{SESSION: copied_session}))
    assert not signed_in(browser_with(app, **{REMEMBER: copied_remember}))
    assert not signed_in(laptop), "signing out signs out everywhere"
    assert browser.get_cookie(REMEMBER) is None, "and the remember cookie is cleared"
    assert not api_session_works(app.test_client(), api_key_session)
    # The API session cookie is gone with it: the API answers this browser anonymously.
    answer = browser.post("/api/myjobs", data={"request-json": json.dumps({})})
    assert json.loads(answer.get_data(as_text=True))["status"] == "error"
    sign_in(browser, "ann@example.org")  # and signing in again works
    assert signed_in(browser)


def test_a_new_api_key_ends_every_session_opened_before(app: Flask) -> None:
    browser = app.test_client()
    key = sign_up(browser, "ann@example.org")
    other_browser = app.test_client()
    sign_in(other_browser, "ann@example.org")
    old_session = api_login(app.test_client(), key)
    page = browser.post("/dashboard/api_key").get_data(as_text=True)
    fresh = re.search(r'id="api-key">([a-z0-9]+)<', page)
    assert fresh
    assert not api_session_works(app.test_client(), old_session)
    assert not signed_in(other_browser)
    assert signed_in(browser), "the browser that made the new key stays signed in"
    # The command-line reset does the same.
    new_session = api_login(app.test_client(), fresh.group(1))
    assert api_session_works(app.test_client(), new_session)
    reset_api_key("ann@example.org")
    assert not api_session_works(app.test_client(), new_session)
    assert not signed_in(browser)


def test_a_new_password_ends_every_other_session(app: Flask) -> None:
    browser = app.test_client()
    key = sign_up(browser, "ann@example.org")
    other_browser = app.test_client()
    sign_in(other_browser, "ann@example.org")
    api_key_session = api_login(app.test_client(), key)
    wrong = browser.post(
        "/dashboard/password",
        data={"current": "not it", "password": "new horse battery", "confirm": "new horse battery"},
    )
    assert "not your current password" in wrong.get_data(as_text=True)
    assert signed_in(other_browser)
    done = browser.post(
        "/dashboard/password",
        data={
            "current": "correct horse",
            "password": "new horse battery",
            "confirm": "new horse battery",
        },
    )
    assert done.status_code == 302
    assert signed_in(browser)
    assert not signed_in(other_browser)
    assert not api_session_works(app.test_client(), api_key_session)
    sign_in(other_browser, "ann@example.org", "new horse battery")


def test_a_cross_site_api_login_never_makes_a_browser_upload_the_attackers(
    app: Flask, make_user
) -> None:  # type: ignore[no-untyped-def]
    """Login CSRF: another site makes the victim's browser post the attacker's key."""
    attacker_id, attacker_key = make_user("mallory@example.org")
    victim = app.test_client()
    api_login(
        victim, attacker_key, Origin="https://evil.example", **{"Sec-Fetch-Site": "cross-site"}
    )
    with victim.session_transaction() as cookie_session:
        assert "api_session" not in cookie_session, "no API session cookie for a cross-site post"
    # Even a cookie planted by a browser that sends neither header names nobody on a form.
    planted = app.test_client()
    api_login(planted, attacker_key)
    for browser in (victim, planted):
        page = browser.get("/upload").get_data(as_text=True)
        response = browser.post(
            "/upload",
            data={"file": (io.BytesIO(b"1 1\n2 2\n3 3\n"), "stars.txt")},
            content_type="multipart/form-data",
        )
        assert response.status_code == 303, page[:300]
    owners = db.session.scalars(select(Submission.user_id)).all()
    assert owners == [None, None], "the uploads are the victim's (anonymous), never Mallory's"
    assert attacker_id not in owners


def test_a_remember_cookie_signs_in_once_and_is_replaced(app: Flask) -> None:
    """Remember tokens rotate: signing in with one gives the browser a new one, and the old
    one (a stolen copy, say) then signs nobody in; other browsers' cookies are unaffected."""
    browser = app.test_client()
    sign_up(browser, "ann@example.org")
    laptop = app.test_client()
    sign_in(laptop, "ann@example.org")
    first = cookie(browser, REMEMBER)
    assert first != cookie(laptop, REMEMBER), "one token per browser"
    # The browser restarts: its session cookie is gone, the remember cookie signs it in.
    restarted = browser_with(app, **{REMEMBER: first})
    assert signed_in(restarted)
    second = cookie(restarted, REMEMBER)
    assert second != first, "a new token for the next time"
    assert signed_in(restarted), "signed in by its session now"
    assert not signed_in(browser_with(app, **{REMEMBER: first})), "the used one is void"
    again = browser_with(app, **{REMEMBER: second})
    assert signed_in(again)
    third = cookie(again, REMEMBER)
    assert third not in (first, second)
    assert not signed_in(browser_with(app, **{REMEMBER: second}))
    # Another browser's cookie still works, once.
    assert signed_in(browser_with(app, **{REMEMBER: cookie(laptop, REMEMBER)}))
    # A made-up or malformed cookie signs nobody in and is cleared.
    for forged in ("0" * 32 + ".x", "not a token", first.split(".")[0] + ".guess"):
        stranger = browser_with(app, **{REMEMBER: forged})
        assert not signed_in(stranger)
        assert stranger.get_cookie(REMEMBER) is None, forged
    # A new password or API key ends every remember cookie too.
    reset_api_key("ann@example.org")
    assert not signed_in(browser_with(app, **{REMEMBER: third}))
