"""The site for people: accounts, forms, permissions, dashboard, explore and sky search."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from nova import create_app
from nova.db.models import Album, ImageTag, Submission, User, UserImage
from nova.extensions import db
from tests.integration.test_solve_apod import finished_job, scale_hint, upload
from tests.support.api import api_call
from tests.support.processes import run_worker
from tests.support.settings import change_settings


def sign_up(client: FlaskClient, email: str, password: str = "correct horse") -> str:
    """Create an account through the form and sign in with it for the first time, which
    shows its API key once; return the key."""
    response = client.post(
        "/signup",
        data={
            "email": email,
            "display_name": email.split("@")[0],
            "password": password,
            "confirm": password,
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    assert response.headers["Location"] == "/signin"
    first = client.post("/signin", data={"email": email, "password": password})
    assert first.status_code == 200, first.get_data(as_text=True)[:500]
    match = re.search(r'<code id="api-key">([a-z0-9]+)</code>', first.get_data(as_text=True))
    assert match, "the new API key is shown once, at the first sign-in"
    return match.group(1)


def sign_in(client: FlaskClient, email: str, password: str = "correct horse") -> None:
    response = client.post("/signin", data={"email": email, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]


def test_sign_up_in_out_and_the_api_key(client: FlaskClient) -> None:
    key = sign_up(client, "ann@example.org")
    assert api_call(client, "login", {"apikey": key})["status"] == "success"
    assert "Dashboard" in client.get("/upload").get_data(as_text=True)
    # The password is stored hashed, never in clear.
    user = db.session.scalars(select(User)).one()
    assert user.password_hash and "correct horse" not in user.password_hash
    client.post("/signout")
    assert client.get("/dashboard").status_code == 302  # sign-in required again
    page = client.post("/signin", data={"email": "ann@example.org", "password": "wrong one"})
    assert "Wrong email or password." in page.get_data(as_text=True)
    sign_in(client, "ANN@example.org")  # emails are case-insensitive
    # Signing up again with the email changes nothing: the old password still signs in,
    # the one given now does not, and no second key is shown.
    client.post("/signout")
    again = client.post(
        "/signup", data={"email": "ann@example.org", "password": "x" * 9, "confirm": "x" * 9}
    )
    assert again.status_code == 302 and again.headers["Location"] == "/signin"
    page = client.post("/signin", data={"email": "ann@example.org", "password": "x" * 9})
    assert "Wrong email or password." in page.get_data(as_text=True)
    sign_in(client, "ann@example.org")
    short = client.post(
        "/signup", data={"email": "bob@example.org", "password": "short", "confirm": "short"}
    )
    assert "at least 8" in short.get_data(as_text=True).lower()
    # A new key replaces the old one at once.
    fresh = re.search(
        r'id="api-key">([a-z0-9]+)<', client.post("/dashboard/api_key").get_data(as_text=True)
    ).group(1)
    assert fresh != key
    assert api_call(client, "login", {"apikey": key})["errormessage"] == "bad apikey"
    assert api_call(client, "login", {"apikey": fresh})["status"] == "success"


def test_sign_in_redirects_only_to_local_pages(client: FlaskClient) -> None:
    sign_up(client, "ann@example.org")
    client.post("/signout")
    response = client.post(
        "/signin?next=//evil.example/x",
        data={"email": "ann@example.org", "password": "correct horse"},
    )
    assert response.headers["Location"] == "/dashboard"
    client.post("/signout")
    response = client.post(
        "/signin?next=/explore", data={"email": "ann@example.org", "password": "correct horse"}
    )
    assert response.headers["Location"] == "/explore"


def test_profile_defaults_shape_the_upload_form(client: FlaskClient) -> None:
    sign_up(client, "ann@example.org")
    response = client.post(
        "/dashboard/profile",
        data={
            "display_name": "Ann O.",
            "default_visibility": "n",
            "default_commercial_use": "n",
            "default_modifications": "sa",
        },
    )
    assert response.status_code == 302
    form = client.get("/upload").get_data(as_text=True)
    assert '<option value="n" selected>only me</option>' in form
    user = db.session.scalars(select(User)).one()
    assert (user.display_name, user.default_visibility) == ("Ann O.", "n")
    # An upload without an explicit choice takes the profile's visibility.
    client.post("/upload", data={"url": "https://example.org/sky.jpg"})
    assert db.session.scalars(select(Submission)).one().publicly_visible == "n"


def test_every_form_is_protected_against_csrf(nova_env: dict[str, str]) -> None:
    app = create_app({"TESTING": True})  # CSRF on, as in production
    with app.app_context():
        from nova.db.schema import init_database

        init_database()
        client = app.test_client()
        for path, data in (
            ("/upload", {"url": "https://example.org/a.jpg"}),
            ("/signup", {"email": "a@b.org", "password": "x" * 9, "confirm": "x" * 9}),
            ("/signin", {"email": "a@b.org", "password": "x" * 9}),
            ("/signout", {}),
            ("/user_images/1/tags", {"text": "x"}),
        ):
            response = client.post(path, data=data)
            assert response.status_code in (400, 302), path
            if response.status_code == 400:
                assert "form expired" in response.get_data(as_text=True)
        assert db.session.scalar(select(func.count()).select_from(Submission)) == 0
        assert db.session.scalar(select(func.count()).select_from(User)) == 0
        # The API is exempt: its clients authenticate with a session key, not cookies.
        assert api_call(client, "login", {"apikey": "nope"})["errormessage"] == "bad apikey"
        db.session.remove()  # end the session's transaction, or PostgreSQL blocks the drop
        db.drop_all()
        db.engine.dispose()


def test_anonymous_uploads_are_public_and_can_be_switched_off(
    app: Flask, client: FlaskClient
) -> None:
    client.post("/upload", data={"url": "https://example.org/a.jpg", "publicly_visible": "n"})
    assert db.session.scalars(select(Submission)).one().publicly_visible == "y"
    change_settings(app, ALLOW_ANONYMOUS_UPLOADS=False)
    response = client.post("/upload", data={"url": "https://example.org/b.jpg"})
    assert response.status_code == 403
    assert "does not take anonymous uploads" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Submission)) == 1


@pytest.mark.engine
def test_several_files_or_a_zip_become_one_submission(client: FlaskClient, apod: Path) -> None:
    sign_up(client, "ann@example.org")
    hint = {"scale_hint": "on", "scale_lower": "3", "scale_upper": "40"}
    files = [(io.BytesIO((apod / f"{n}.jpg").read_bytes()), f"{n}.jpg") for n in ("apod2", "apod4")]
    response = client.post(
        "/upload", data={"file": files, **hint}, content_type="multipart/form-data"
    )
    assert response.status_code == 303
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(apod / "apod4.jpg", "night/apod4.jpg")
        archive.writestr("notes.txt", "seeing was poor")
    response = client.post(
        "/upload",
        data={"file": (io.BytesIO(buffer.getvalue()), "n.zip"), **hint},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    run_worker()
    first, second = db.session.scalars(select(Submission).order_by(Submission.created_at)).all()
    assert first.original_filename == "2 files"
    assert sorted(i.original_filename for i in first.user_images) == ["apod2.jpg", "apod4.jpg"]
    assert [i.original_filename for i in second.user_images] == ["apod4.jpg"]
    for image in first.user_images + second.user_images:
        assert image.best_job.status == "success", image.best_job.failure_reason


@pytest.mark.engine
def test_owner_actions_permissions_search_and_privacy(app: Flask, apod: Path) -> None:
    ann, bob, anonymous = app.test_client(), app.test_client(), app.test_client()
    sign_up(ann, "ann@example.org")
    sign_up(bob, "bob@example.org")
    # Ann: a public Big Dipper and a private one; Bob comments, tags nothing.
    ids = {}
    for visibility in ("y", "n"):
        sub = upload(
            ann,
            (apod / "apod4.jpg").read_bytes(),
            f"dipper-{visibility}.jpg",
            publicly_visible=visibility,
            **scale_hint(33.0),
        )
        ids[visibility] = sub
    run_worker()
    public = finished_job(ann, ids["y"]).user_image
    private = finished_job(ann, ids["n"]).user_image
    assert (public.publicly_visible, private.publicly_visible) == ("y", "n")

    # Tags: only the owner adds and removes; user text is escaped everywhere.
    hostile = '<script>alert("x")</script>'
    assert bob.post(f"/user_images/{public.id}/tags", data={"text": "bob's"}).status_code == 302
    ann.post(f"/user_images/{public.id}/tags", data={"text": hostile})
    ann.post(f"/user_images/{public.id}/tags", data={"text": "Big Dipper"})
    texts = [t.text for t in db.session.scalars(select(ImageTag).where(~ImageTag.machine))]
    assert sorted(texts) == sorted([hostile, "Big Dipper"])
    page = anonymous.get(f"/user_images/{public.id}").get_data(as_text=True)
    assert hostile not in page and "&lt;script&gt;" in page
    assert "Machine tags" in page and "Part of the constellation Ursa Major" in page
    tag_id = db.session.scalar(select(ImageTag.id).where(ImageTag.text == hostile))
    bob.post(f"/user_images/{public.id}/tags/{tag_id}/delete")
    assert db.session.get(ImageTag, tag_id) is not None
    ann.post(f"/user_images/{public.id}/tags/{tag_id}/delete")
    assert db.session.get(ImageTag, tag_id) is None

    # Comments: any signed-in user; deleted by the author or the image's owner.
    bob.post(f"/user_images/{public.id}/comments", data={"text": "Lovely <b>field</b>"})
    page = anonymous.get(f"/user_images/{public.id}").get_data(as_text=True)
    assert "Lovely &lt;b&gt;field&lt;/b&gt;" in page
    assert (
        anonymous.post(f"/user_images/{public.id}/comments", data={"text": "spam"}).status_code
        == 302
    )  # to sign-in
    assert len(db.session.get(UserImage, public.id).comments) == 1

    # Albums: own albums only.
    ann.post("/dashboard/albums", data={"title": "Asterisms"})
    album = db.session.scalars(select(Album)).one()
    bob.post(f"/user_images/{public.id}/albums", data={"album_id": album.id})
    assert album.images == []
    ann.post(f"/user_images/{public.id}/albums", data={"album_id": album.id})
    db.session.refresh(album)
    assert [image.id for image in album.images] == [public.id]
    assert f"/user_images/{public.id}" in anonymous.get(f"/albums/{album.id}").get_data(
        as_text=True
    )

    # Explore, search by name, by position (degrees and sexagesimal), nearby: the private
    # image shows up for Ann only.
    def listed(client: FlaskClient, path: str) -> set[int]:
        return {
            int(i)
            for i in re.findall(r"/user_images/(\d+)\"", client.get(path).get_data(as_text=True))
        }

    searches = [
        "/explore",
        "/search?q=Ursa+Major",
        "/search?q=big+dipper",
        "/search?ra=187.2&dec=56.7&radius=5",
        "/search?ra=12:28:48&dec=%2B56:42:00&radius=5",
        "/user_images/tag?query=Big+Dipper",
        f"/users/{public.user_id}",
    ]
    for path in searches:
        assert public.id in listed(anonymous, path), path
        assert private.id not in listed(anonymous, path), path
        assert private.id not in listed(bob, path), path
    assert private.id in listed(ann, "/search?ra=187.2&dec=56.7&radius=5")
    assert listed(anonymous, "/search?ra=10&dec=-60&radius=5") == set()
    nearby = listed(ann, f"/user_images/{public.id}")
    assert private.id in nearby  # the owner sees her own private neighbour
    assert private.id not in listed(bob, f"/user_images/{public.id}")
    bad = anonymous.get("/search?ra=25h&dec=95&radius=5")
    assert (
        bad.status_code == 200
        and "Could not read the position" in bad.get_data(as_text=True)
        or "RA must be" in bad.get_data(as_text=True)
    )

    # Visibility toggle: owner only; then the image disappears for others at once.
    bob.post(f"/user_images/{public.id}/visibility", data={"visible": "n"})
    assert db.session.get(UserImage, public.id).publicly_visible == "y"
    ann.post(f"/user_images/{public.id}/visibility", data={"visible": "n"})
    db.session.expire_all()
    assert db.session.get(UserImage, public.id).publicly_visible == "n"
    assert anonymous.get(f"/user_images/{public.id}").status_code == 404
    assert anonymous.get(f"/new_fits_file/{public.best_job.id}").status_code == 404
    assert public.id not in listed(anonymous, "/explore")

    # Dashboard lists everything of one's own.
    assert {public.id, private.id} <= listed(ann, "/dashboard")
    assert listed(bob, "/dashboard") == set()
    subs = ann.get("/dashboard?tab=submissions").get_data(as_text=True)
    assert subs.count("/status/") >= 2
