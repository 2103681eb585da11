"""Privacy that holds: a private image is invisible to everyone but its owner, everywhere,
but for the solve result its ids open (nova.services.access).

Every URL that can show an image's data is asked by the owner, another user and an
anonymous caller, for a public and a private image. For the private image, non-owners get
exactly the answer for an id that does not exist, except on the solve-result URLs while
the id opens them (the job ran within NOVA_ID_ACCESS_HOURS); once that window has passed,
those too answer as for a missing id.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from nova.db.models import RANDOM_ID_HIGH, RANDOM_ID_LOW, Job, Submission, UserImage
from nova.extensions import db
from nova.services.gallery import add_tag
from tests.support.api import api_call, api_login
from tests.support.figures import record_figure
from tests.support.processes import run_worker
from tests.support.settings import change_settings

pytestmark = pytest.mark.engine

MISSING = 987654321
URLS = [
    "/api/submissions/{sub}",
    "/api/jobs/{job}",
    "/api/jobs/{job}/calibration",
    "/api/jobs/{job}/info",
    "/api/jobs/{job}/tags",
    "/api/jobs/{job}/machine_tags",
    "/api/jobs/{job}/objects_in_field",
    "/api/jobs/{job}/annotations",
    "/wcs_file/{job}",
    "/rdls_file/{job}",
    "/axy_file/{job}",
    "/corr_file/{job}",
    "/joblog/{job}",
    "/new_fits_file/{job}",
    "/image_rd_file/{job}",
    "/kml_file/{job}",
    "/annotated_display/{job}",
    "/grid_full/{job}",
    "/red_green_image_display/{job}",
    "/extraction_image_full/{job}",
    "/extraction_image_display/{job}",
    "/annotated_full/{job}",
    "/grid_display/{job}",
    "/red_green_image_full/{job}",
    "/sky_plot/zoom0/{cal}",
    "/sky_plot/zoom1/{cal}",
    "/thumbnail_of_image/{img}",
    "/display_image/{img}",
    "/status/{sub}",
    "/status/{sub}/state",
    "/user_images/{img}",
    "/image/{img}",
]
# The solve result: what the id of a private job opens to whoever holds it, for a while.
ID_OPENS = {
    "/api/submissions/{sub}",
    "/api/jobs/{job}",
    "/api/jobs/{job}/calibration",
    "/api/jobs/{job}/info",
    "/api/jobs/{job}/machine_tags",
    "/api/jobs/{job}/objects_in_field",
    "/api/jobs/{job}/annotations",
    "/wcs_file/{job}",
}
OWNER_TAG = "my secret target"


def answer(client: FlaskClient, url: str, session_key: str | None, ids: dict[str, int]) -> tuple:
    """(status, body with the asked id blanked out) for a GET and a POST carrying a session."""
    path = url.format(**ids)
    data = {"request-json": json.dumps({"session": session_key})} if session_key else None
    results = []
    for method in ("GET", "POST"):
        if method == "POST" and not path.startswith("/api/"):
            continue
        response = client.open(path, method=method, data=data)
        body = response.get_data().decode("latin-1")
        # Signed-in pages carry a fresh CSRF token each time: not part of the answer.
        body = re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token"', body)
        for key, value in ids.items():
            if "{" + key + "}" in url:
                body = body.replace(str(value), "<id>")
        results.append((response.status_code, body))
    return tuple(results)


@pytest.fixture
def solved(app: Flask, client: FlaskClient, make_user, apod: Path) -> dict:  # type: ignore[no-untyped-def]
    _, ann_key = make_user("ann@example.org")
    _, bob_key = make_user("bob@example.org")
    ann_session = api_login(client, ann_key)
    images = {}
    for visibility in ("y", "n"):
        form = {
            "request-json": json.dumps(
                {
                    "session": ann_session,
                    "publicly_visible": visibility,
                    "scale_units": "degwidth",
                    "scale_lower": 25,
                    "scale_upper": 40,
                }
            ),
            "file": ((apod / "apod4.jpg").open("rb"), "apod4.jpg"),
        }
        subid = json.loads(client.post("/api/upload", data=form).data)["subid"]
        images[visibility] = subid
    run_worker()
    ids = {}
    for visibility, subid in images.items():
        status = api_call(client, f"submissions/{subid}", {"session": ann_session})
        assert status["job_calibrations"], status
        ids[visibility] = {
            "sub": subid,
            "job": status["jobs"][0],
            "img": status["user_images"][0],
            "cal": status["job_calibrations"][0][1],
        }
        image = db.session.get(UserImage, ids[visibility]["img"])
        add_tag(image, image.user, OWNER_TAG)
    return {"ann": ann_session, "bob_key": bob_key, "ids": ids}


def matrix(app: Flask, solved: dict, *, id_opens: set[str]) -> tuple[int, int]:  # type: ignore[type-arg]
    """(checks, leaks): every URL asked by the owner, another user and an anonymous caller.

    On a private image a non-owner must get the missing-id answer, except on ``id_opens``,
    where the solve result must be there without anything the owner wrote."""
    owner = app.test_client()
    owner_session = solved["ann"]
    other = app.test_client()
    other_session = api_login(other, solved["bob_key"])
    anonymous = app.test_client()
    missing = {"sub": MISSING, "job": MISSING, "img": MISSING, "cal": MISSING}
    checked = leaks = 0
    for url in URLS:
        for visibility, ids in solved["ids"].items():
            owner_answer = answer(owner, url, owner_session, ids)
            assert all(status == 200 for status, _ in owner_answer), (url, visibility)
            for name, caller, session_key in (
                ("other", other, other_session),
                ("anonymous", anonymous, None),
            ):
                seen = answer(caller, url, session_key, ids)
                checked += 1
                if visibility == "y":
                    assert seen[0][0] == 200, (url, name)
                    continue
                if url in id_opens:
                    assert all(status == 200 for status, _ in seen), (url, name, seen)
                    if OWNER_TAG in seen[0][1]:
                        leaks += 1
                        print(f"LEAK of the owner's tag {url} to {name}")
                    continue
                expected = answer(caller, url, session_key, missing)
                if seen != expected:
                    leaks += 1
                    print(f"LEAK {url} to {name}: {seen[0][0]} {seen[0][1][:120]!r}")
    return checked, leaks


def test_privacy_matrix(app: Flask, solved: dict) -> None:  # type: ignore[type-arg]
    checked, leaks = matrix(app, solved, id_opens=ID_OPENS)
    record_figure(
        f"privacy matrix: {checked} URL x caller x visibility checks, leaks found = {leaks}"
    )
    assert leaks == 0
    private = solved["ids"]["n"]
    info = api_call(app.test_client(), f"jobs/{private['job']}/info", method="GET")
    assert info["tags"] == info["machine_tags"] and OWNER_TAG not in info["tags"]
    assert "Part of the constellation Ursa Major (UMa)" in info["machine_tags"]
    # The window passes: the private job's id opens nothing any more.
    job = db.session.get(Job, private["job"])
    job.finished_at -= timedelta(hours=app.config["ID_ACCESS_HOURS"], minutes=1)
    db.session.commit()
    checked, leaks = matrix(app, solved, id_opens=set())
    assert leaks == 0


def test_ids_are_random_32_bit_integers(app: Flask, solved: dict) -> None:  # type: ignore[type-arg]
    public, private = solved["ids"]["y"], solved["ids"]["n"]
    for kind in ("sub", "job"):
        assert RANDOM_ID_LOW <= public[kind] <= RANDOM_ID_HIGH < 2**31
        assert RANDOM_ID_LOW <= private[kind] <= RANDOM_ID_HIGH
        # Consecutive uploads do not get consecutive ids: one id tells nothing of the next.
        assert abs(public[kind] - private[kind]) > 1
    assert db.session.get(Submission, private["sub"]).publicly_visible == "n"


def test_no_id_access_setting_keeps_private_results_to_the_owner(
    app: Flask,
    solved: dict,  # type: ignore[type-arg]
) -> None:
    change_settings(app, ID_ACCESS_HOURS=0)
    checked, leaks = matrix(app, solved, id_opens=set())
    assert leaks == 0


def test_lists_show_private_images_to_their_owner_only(app: Flask, solved: dict) -> None:  # type: ignore[type-arg]
    owner = app.test_client()
    other = app.test_client()
    other_session = api_login(other, solved["bob_key"])
    public_job, private_job = solved["ids"]["y"]["job"], solved["ids"]["n"]["job"]
    mine = api_call(owner, "myjobs", {"session": solved["ann"]})["jobs"]
    assert sorted(mine) == sorted([public_job, private_job])
    assert api_call(other, "myjobs", {"session": other_session})["jobs"] == []
    for client, session_key, expected in (
        (owner, solved["ann"], [public_job, private_job]),
        (other, other_session, [public_job]),
        (app.test_client(), None, [public_job]),
    ):
        data = {"session": session_key} if session_key else None
        for query in ("jobs_by_tag?query=Ursa", "jobs_by_tag?query=the star dubhe&exact=1"):
            assert sorted(api_call(client, query, data)["job_ids"]) == sorted(expected), query
    # The site's lists and searches: the private image's page link appears to its owner only.
    private_link = f'/user_images/{solved["ids"]["n"]["img"]}"'
    public_link = f'/user_images/{solved["ids"]["y"]["img"]}"'
    pages = ("/explore", "/search?q=Ursa", "/user_images/tag?query=Ursa",
             "/search?ra=187.2&dec=56.7&radius=5")  # fmt: skip
    # ``other`` is signed in by the cookie its API login set.
    callers = {"other": other, "anonymous": app.test_client()}
    for page in pages:
        for name, caller in callers.items():
            body = caller.get(page).get_data(as_text=True)
            assert public_link in body, (page, name)
            assert private_link not in body, (page, name)
    assert api_call(
        other, "submission_images", {"session": other_session, "subid": solved["ids"]["n"]["sub"]}
    ) == {"status": "error", "errormessage": "submission does not exist"}


# Every route of the app, by how it keeps private content private; routes in URLS above are
# asked by the matrix test. A new route fails test_every_route_is_classified until it is put
# here, with the test that checks it.
ROUTES_BY_RULE = {
    # Nothing of anyone's: the upload forms and endpoints, docs, health, static files, /metrics
    # (its own token, tests/system/test_metrics.py).
    "public": {
        "web.upload_page", "web.upload", "web.healthz", "static", "apidocs.docs",
        "apidocs.openapi_json", "metrics.scrape", "api.upload", "api.url_upload",
        "batches.upload_batch", "api.login", "account.signin", "account.signup",
        "account.signout",
    },
    # Lists and searches filtered by access.visible_* (test_lists_show_private_images_to_
    # their_owner_only, test_api's albums test, test_site's owner actions and search).
    "listing": {
        "pages.explore", "pages.search", "pages.by_tag", "api.jobs_by_tag", "pages.user_page",
        "pages.album", "api.submission_images",
    },
    # The caller's own things only (login required; access.owns / owned_clause): test_site's
    # owner actions, test_api's cancel/delete/myjobs tests.
    "owner": {
        "pages.dashboard", "pages.create_album", "account.regenerate_api_key",
        "account.change_password", "account.profile", "api.my_jobs", "api.job_cancel",
        "api.submission_delete", "pages.cancel_job", "pages.delete_submission",
        "pages.delete_image", "pages.delete_comment", "pages.add_to_album", "pages.add_comment",
        "pages.add_tag", "pages.remove_tag", "pages.set_visibility",
    },
    # access.can_view / can_read_result like the matrix's pages: test_batches'
    # test_a_private_batch_stays_private, test_events' test_a_private_job_streams_to_its_owner_only.
    "by id": {
        "batches.batch_status", "batches.batch_calibrations", "batches.batch_wcs",
        "batches.batch_page", "events.job_events", "events.submission_events",
    },
    # Admins only (test_admin's test_admin_page_is_hidden_from_everyone_but_admins).
    "admin": {"admin.overview", "admin.indexes_json"},
}  # fmt: skip


def _matrix_endpoints(app: Flask) -> set[str]:
    """The endpoints the matrix asks, found by matching its URLs against the app's rules."""
    adapter = app.url_map.bind("localhost")
    return {adapter.match(url.format(job=1, sub=1, img=1, cal=1))[0] for url in URLS}


def test_every_route_is_classified(app: Flask) -> None:
    """Every route either is asked by the privacy matrix or says how it stays private."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    classified = set().union(*ROUTES_BY_RULE.values())
    asked = _matrix_endpoints(app)
    assert not asked & classified, "a route the matrix asks is also classified by hand"
    assert endpoints - asked - classified == set(), "unclassified routes"
    assert classified - endpoints == set(), "classified routes the app does not have"
