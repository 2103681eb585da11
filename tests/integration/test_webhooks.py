"""Webhooks (callback_url) delivered by a real ``nova worker`` to a real HTTP receiver on
loopback, after a real solve of a star list."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from astropy.io import fits
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from nova.db.models import Submission, User, WebhookDelivery
from nova.extensions import db
from nova.infra import metrics
from tests.support.api import api_call, api_login
from tests.support.processes import wait_for

HINT = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}


@dataclass
class Receiver:
    """An HTTP server on loopback that records every POST and answers the next status in
    ``answers`` (200 once they are used up)."""

    url: str
    answers: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.received.append((dict(self.headers), body))
                status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook?from=nova"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def webhook_env(monkeypatch: pytest.MonkeyPatch, nova_env: dict[str, str]) -> None:
    monkeypatch.setenv("NOVA_URL_ALLOW_PRIVATE", "true")  # the receiver is on loopback
    monkeypatch.setenv("NOVA_WEBHOOK_RETRY_INTERVALS", "1,1,1,1")  # 5 tries, seconds apart
    monkeypatch.setenv("NOVA_PUBLIC_URL", "https://nova.example.org")


def star_list(apod: Path) -> tuple[list[float], list[float]]:
    with fits.open(apod / "apod4.xyls") as hdus:
        table = hdus[1].data
        return [float(v) for v in table["X"]], [float(v) for v in table["Y"]]


def upload_stars(client: FlaskClient, session: str, apod: Path, **extra: object) -> dict:
    x, y = star_list(apod)
    args = {
        "session": session,
        "x": x,
        "y": y,
        "image_width": 719,
        "image_height": 507,
        **HINT,
        **extra,
    }
    return api_call(client, "upload", args)


def finished_job(client: FlaskClient, submission_id: int) -> int:
    def done() -> bool:
        status = api_call(client, f"submissions/{submission_id}")
        return bool(status.get("jobs")) and status["processing_finished"] != "None"

    assert wait_for(done, 120)
    job_id = int(api_call(client, f"submissions/{submission_id}")["jobs"][0])  # type: ignore[index]
    ended = ("success", "failure")
    assert wait_for(lambda: api_call(client, f"jobs/{job_id}")["status"] in ended, 120)
    return job_id


def deliveries(app: Flask, job_id: int) -> list[WebhookDelivery]:
    with app.app_context():
        rows = db.session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
        ).all()
        db.session.expunge_all()
        return list(rows)


def test_a_webhook_arrives_once_per_job_with_a_valid_signature(
    webhook_env: None,
    app: Flask,
    client: FlaskClient,
    make_user: Callable[[str], tuple[int, str]],
    worker_process: Callable[[], object],
    receiver: Receiver,
    apod: Path,
) -> None:
    user_id, key = make_user("ann@example.org")
    session = api_login(client, key)
    answer = upload_stars(client, session, apod, callback_url=receiver.url)
    assert answer["status"] == "success"
    assert set(answer) == {"status", "subid", "hash"}  # the answer keeps nova's keys
    worker_process()
    job_id = finished_job(client, int(answer["subid"]))
    assert wait_for(lambda: len(deliveries(app, job_id)) == 1, 60)
    # Two more jobs' worth of worker time: no second delivery of the same job comes.
    second = upload_stars(client, session, apod, callback_url=receiver.url)
    second_job = finished_job(client, int(second["subid"]))
    assert wait_for(lambda: len(deliveries(app, second_job)) == 1, 60)
    assert len(deliveries(app, job_id)) == 1

    with receiver.lock:
        received = list(receiver.received)
    assert len(received) == 2
    bodies = [json.loads(body) for _, body in received]
    assert sorted(body["job"] for body in bodies) == sorted([job_id, second_job])
    headers, body = next((h, b) for h, b in received if json.loads(b)["job"] == job_id)
    secret = db.session.get(User, user_id).webhook_secret
    assert secret
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Nova-Signature"], expected)
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    calibration = api_call(client, f"jobs/{job_id}/calibration")
    assert payload["event"] == "job.finished"
    assert payload["subid"] == int(answer["subid"])
    assert payload["status"] == "success"
    assert payload["failure_reason"] is None
    assert payload["calibration"]["ra"] == pytest.approx(calibration["ra"])
    assert payload["calibration"]["dec"] == pytest.approx(calibration["dec"])
    image_id = api_call(client, f"submissions/{answer['subid']}")["user_images"][0]
    assert payload["url"] == f"https://nova.example.org/user_images/{image_id}"
    # /api/jobs/J/info lists the delivery (a new key; the old ones stay).
    info = api_call(client, f"jobs/{job_id}/info")
    assert info["status"] == "success" and "calibration" in info
    assert [(d["status_code"], d["delivered"]) for d in info["webhook_deliveries"]] == [(200, True)]


def test_a_500_is_retried_and_every_try_is_recorded(
    webhook_env: None,
    app: Flask,
    client: FlaskClient,
    make_user: Callable[[str], tuple[int, str]],
    worker_process: Callable[[], object],
    receiver: Receiver,
    apod: Path,
) -> None:
    receiver.answers = [500, 500]
    counted = redis.Redis.from_url(app.config["REDIS_URL"])
    counter = metrics.CALLBACK_DELIVERIES.key

    def deliveries_counted() -> dict[str, float]:
        return {k.decode(): float(v) for k, v in counted.hgetall(counter).items()}

    before = deliveries_counted()
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    answer = upload_stars(client, session, apod, callback_url=receiver.url)
    worker_process()
    job_id = finished_job(client, int(answer["subid"]))
    assert wait_for(lambda: any(d.delivered for d in deliveries(app, job_id)), 90)
    tries = sorted(deliveries(app, job_id), key=lambda d: d.id)
    assert [d.status_code for d in tries] == [500, 500, 200]
    assert tries[0].error == "the receiver answered 500"
    # RQ's Retry waited between tries (intervals of 1 s here).
    assert tries[1].attempted_at > tries[0].attempted_at
    with receiver.lock:
        bodies = [body for _, body in receiver.received]
    assert len(bodies) == 3 and len(set(bodies)) == 1  # the same signed body every time
    info = api_call(client, f"jobs/{job_id}/info")
    assert [d["status_code"] for d in info["webhook_deliveries"]] == [500, 500, 200]
    image_id = api_call(client, f"submissions/{answer['subid']}")["user_images"][0]
    page = client.get(f"/user_images/{image_id}").get_data(as_text=True)
    assert "Webhook deliveries" in page
    assert page.count('data-delivered="no"') == 2 and page.count('data-delivered="yes"') == 1
    # /metrics counts the tries by outcome (nova_callback_deliveries_total).
    after = deliveries_counted()
    gained = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert gained == {"delivered": 1, "retrying": 2}, gained


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "ftp://example.org/hook",
    ],
)
def test_private_and_odd_callback_addresses_are_refused(
    url: str, client: FlaskClient, make_user: Callable[[str], tuple[int, str]], apod: Path
) -> None:
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    answer = upload_stars(client, session, apod, callback_url=url)
    assert answer["status"] == "error"
    assert "callback_url" in answer["errormessage"]
    assert db.session.scalars(select(Submission)).all() == []  # nothing stored
    form = client.post("/upload", data={"url": "https://example.org/a.jpg", "callback_url": url})
    assert form.status_code == 400
    assert "callback url" in form.get_data(as_text=True).lower()
    assert db.session.scalars(select(Submission)).all() == []


def test_the_metadata_address_is_refused_even_where_private_ones_are_allowed(
    webhook_env: None, client: FlaskClient, make_user: Callable[[str], tuple[int, str]], apod: Path
) -> None:
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    refused = upload_stars(client, session, apod, callback_url="http://169.254.169.254/x")
    assert refused["status"] == "error", refused
    allowed = upload_stars(client, session, apod, callback_url="http://127.0.0.1:9/x")
    assert allowed["status"] == "success", allowed


def test_an_anonymous_upload_signs_with_its_own_secret(
    webhook_env: None,
    app: Flask,
    client: FlaskClient,
    worker_process: Callable[[], object],
    receiver: Receiver,
    apod: Path,
) -> None:
    response = client.post(
        "/upload",
        data={
            "file": ((apod / "apod4.xyls").open("rb"), "apod4.xyls"),
            "callback_url": receiver.url,
            "scale_hint": "on",
            "scale_units": "degwidth",
            "scale_type": "ul",
            "scale_lower": "25",
            "scale_upper": "40",
        },
        follow_redirects=True,
    )
    assert response.status_code == 200
    submission = db.session.scalars(select(Submission)).one()
    assert submission.user_id is None and submission.callback_secret
    secret = submission.callback_secret
    assert secret in response.get_data(as_text=True)  # told once, on the page after the upload
    assert secret not in client.get(f"/status/{submission.id}").get_data(as_text=True)
    worker_process()
    assert wait_for(lambda: len(receiver.received) == 1, 120)
    headers, body = receiver.received[0]
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Nova-Signature"] == expected
    assert json.loads(body)["subid"] == submission.id
