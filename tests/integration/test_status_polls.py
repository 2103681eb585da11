"""The bare status poll path (nova.web.api.status_polls): anonymous polls answered before
Flask give exactly the answer Flask gives, and everything that could name a caller, or that
the anonymous answer does not cover, still reaches Flask."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import Client, TestResponse

from nova.db.models import Job, Submission, UserImage
from nova.engine.params import MAX_ROW_ID
from nova.extensions import db
from nova.services import intake, jobs
from nova.web.api.status_polls import StatusPolls
from tests.support.api import api_call, api_login
from tests.support.settings import change_settings

# Differs between any two answers by design.
PER_REQUEST_HEADERS = {"X-Request-ID"}


class CountingApp:
    """The WSGI app inside the fast path, counting the requests that reach it."""

    def __init__(self, inner: Callable[..., Iterable[bytes]]) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        self.calls += 1
        return self.inner(environ, start_response)


@pytest.fixture
def polls(app: Flask) -> Iterable[tuple[StatusPolls, CountingApp]]:
    outer = app.wsgi_app
    assert isinstance(outer, StatusPolls), outer
    flask_side = CountingApp(outer.wsgi_app)
    outer.wsgi_app = flask_side
    yield outer, flask_side
    outer.wsgi_app = flask_side.inner


def comparable(response: TestResponse) -> tuple[int, dict[str, str], Any]:
    headers = {k: v for k, v in response.headers.items() if k not in PER_REQUEST_HEADERS}
    return response.status_code, headers, json.loads(response.get_data(as_text=True))


def both_ways(
    polls: tuple[StatusPolls, CountingApp], path: str, **request: Any
) -> tuple[TestResponse, TestResponse]:
    """The answer through the fast path (whole app), then Flask's own to the same request."""
    outer, flask_side = polls
    through = bare_client(outer).open(path, **request)
    flask = bare_client(flask_side.inner).open(path, **request)
    return through, flask


def answered(
    polls: tuple[StatusPolls, CountingApp], path: str, by_flask: bool, **request: Any
) -> Any:
    """The answer's JSON, once it is checked to be Flask's own and to have reached Flask
    (``by_flask``) or not."""
    _, flask_side = polls
    before = flask_side.calls
    through, flask = both_ways(polls, path, **request)
    assert flask_side.calls == before + by_flask, (path, request, by_flask)
    assert comparable(through) == comparable(flask), (path, request)
    assert through.headers["X-Request-ID"] != flask.headers["X-Request-ID"]
    return comparable(through)[2]


def bare_client(wsgi_app: Callable[..., Any]) -> Client:
    """A client that sends exactly the headers it is given (no cookie jar of its own)."""
    return Client(wsgi_app, use_cookies=False)


def upload_xyls(client: FlaskClient, session: str, apod: Path, public: bool) -> int:
    args = {
        "session": session,
        "publicly_visible": "y" if public else "n",
        "scale_units": "degwidth",
        "scale_lower": 26,
        "scale_upper": 40,
    }
    path = apod / "apod4.xyls"
    form = {"request-json": json.dumps(args), "file": (path.open("rb"), path.name)}
    answer = json.loads(client.post("/api/upload", data=form).data)
    assert answer["status"] == "success", answer
    return int(answer["subid"])


def only_job(subid: int) -> int:
    submission = db.session.get(Submission, subid)
    db.session.refresh(submission)
    (image,) = submission.user_images
    (job,) = image.jobs
    return int(job.id)


def test_bare_polls_answer_as_flask_does_in_every_state(
    app: Flask,
    client: FlaskClient,
    apod: Path,
    make_user: Callable[[str], tuple[int, str]],
    polls: tuple[StatusPolls, CountingApp],
) -> None:
    _, key = make_user("public@example.org")
    session = api_login(client, key)
    subid = upload_xyls(client, session, apod, public=True)
    seen: list[Any] = []

    def same_answer(path: str) -> Any:
        seen.append(answered(polls, path, by_flask=False))
        return seen[-1]

    assert same_answer(f"/api/submissions/{subid}")["jobs"] == []
    intake.process_submission(subid)
    job_id = only_job(subid)
    assert same_answer(f"/api/submissions/{subid}")["jobs"] == [job_id]
    assert same_answer(f"/api/jobs/{job_id}")["status"] == "processing"
    assert same_answer(f"/api/jobs/{job_id}/info")["status"] == "processing"
    assert jobs.claim_job(job_id)
    assert same_answer(f"/api/jobs/{job_id}") == {
        "status": "solving",
        "queue_position": 0,
        "eta_seconds": None,
    }
    jobs.finish_job(job_id, numbers=None, wcs_header=None, failure_reason="test end", sources=0)
    assert same_answer(f"/api/jobs/{job_id}") == {"status": "failure"}
    info = same_answer(f"/api/jobs/{job_id}/info")
    assert info["status"] == "failure" and info["objects_in_field"] == []
    finished = same_answer(f"/api/submissions/{subid}")
    assert finished["job_calibrations"] == [] and "queue_position" not in finished
    # The answers really were nova's, not one error seen seven times.
    assert all("errormessage" not in answer for answer in seen), seen


def test_polls_that_may_name_a_caller_reach_flask(
    app: Flask,
    client: FlaskClient,
    apod: Path,
    make_user: Callable[[str], tuple[int, str]],
    polls: tuple[StatusPolls, CountingApp],
) -> None:
    _, key = make_user("private@example.org")
    session = api_login(client, key)
    private = upload_xyls(client, session, apod, public=False)
    public = upload_xyls(client, session, apod, public=True)
    for subid in (private, public):
        intake.process_submission(subid)
    private_job, public_job = only_job(private), only_job(public)
    image = db.session.get(UserImage, db.session.get(Job, private_job).user_image_id)
    assert image.publicly_visible == "n"
    _, flask_side = polls

    def reaches_flask(path: str, **request: Any) -> Any:
        return answered(polls, path, by_flask=True, **request)

    # Nothing the anonymous answer covers: Flask answers nova's error.
    missing_job = {"status": "error", "errormessage": "job does not exist"}
    assert reaches_flask(f"/api/jobs/{MAX_ROW_ID}") == missing_job
    assert reaches_flask("/api/submissions/999999")["errormessage"] == ("submission does not exist")
    # Past what the id converter takes: Flask's 404. Spelled with a leading zero: Flask's
    # to parse (the fast path takes only canonical ids).
    before = flask_side.calls
    through, flask = both_ways(polls, f"/api/jobs/{MAX_ROW_ID + 1}")
    assert flask_side.calls == before + 1
    assert through.status_code == flask.status_code == 404
    assert reaches_flask(f"/api/jobs/0{public_job}")["status"] == "processing"
    # Anything that may name a caller or carry a body.
    owner = reaches_flask(f"/api/jobs/{private_job}", query_string={"session": session})
    assert owner["status"] == "processing"
    reaches_flask(f"/api/jobs/{public_job}", headers={"Cookie": "session=whatever"})
    reaches_flask(f"/api/jobs/{public_job}", method="POST", data={"request-json": "{}"})
    reaches_flask(f"/api/jobs/{public_job}", data={"request-json": "{}"})
    # A private job is open to an id-holder for a while (its answer is the anonymous one);
    # once the window closes, Flask answers that it does not exist.
    answered(polls, f"/api/jobs/{private_job}", by_flask=False)
    change_settings(app, ID_ACCESS_HOURS=0)
    assert reaches_flask(f"/api/jobs/{private_job}") == missing_job
    assert reaches_flask(f"/api/jobs/{private_job}/info") == missing_job
    # And the bare public poll itself is the one that does not.
    assert answered(polls, f"/api/jobs/{public_job}", by_flask=False)["status"] == "processing"
    # Other API paths under the same prefix are Flask's.
    reaches_flask(f"/api/jobs/{public_job}/calibration")


def test_a_sane_request_id_is_echoed_and_any_other_replaced(
    app: Flask,
    client: FlaskClient,
    apod: Path,
    make_user: Callable[[str], tuple[int, str]],
    polls: tuple[StatusPolls, CountingApp],
) -> None:
    _, key = make_user("ids@example.org")
    subid = upload_xyls(client, api_login(client, key), apod, public=True)
    outer, flask_side = polls
    path = f"/api/submissions/{subid}"
    before = flask_side.calls
    sane = bare_client(outer).get(path, headers={"X-Request-ID": "client-7f3a.2"})
    assert sane.headers["X-Request-ID"] == "client-7f3a.2"
    for offered in ("x" * 65, "bad id", "", "\u00e9t\u00e9"):
        through = bare_client(outer).get(path, headers={"X-Request-ID": offered})
        flask = bare_client(flask_side.inner).get(path, headers={"X-Request-ID": offered})
        assigned = through.headers["X-Request-ID"]
        assert assigned != offered and len(assigned) == len(flask.headers["X-Request-ID"])
        assert assigned.isalnum()
    assert flask_side.calls == before  # the Flask side was asked directly, not through it
    # The test client goes through app.wsgi_app as a server does: an anonymous test client's
    # poll takes the fast path, a signed-in one's (API login sets the session cookie) Flask's.
    assert api_call(app.test_client(), f"submissions/{subid}", method="GET")["jobs"] == []
    assert flask_side.calls == before
    assert api_call(client, f"submissions/{subid}", method="GET")["jobs"] == []
    assert flask_side.calls == before + 1
