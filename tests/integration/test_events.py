"""Live events (/api/jobs/J/events, /api/submissions/S/events) with a real solve: the real
engine on apod4, real redis pub/sub, a real ``nova worker``."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from nova.db.models import Job, JobStatus
from nova.services import events
from tests.support.api import api_call, api_login
from tests.support.processes import wait_for
from tests.support.settings import change_settings

APOD4_HINT = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}


@dataclass(frozen=True)
class Event:
    id: int
    name: str
    data: dict[str, object]


def read_events(chunks: Iterator[bytes]) -> Iterator[Event]:
    """Parse a text/event-stream: one Event per block that has an id (comments skipped)."""
    pending = ""
    for chunk in chunks:
        pending += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in pending:
            block, pending = pending.split("\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.split("\n"):
                if line.startswith(":") or ":" not in line:
                    continue
                name, value = line.split(":", 1)
                fields[name] = value.removeprefix(" ")
            if "id" in fields:
                yield Event(int(fields["id"]), fields["event"], json.loads(fields["data"]))


@pytest.fixture
def live_settings(monkeypatch: pytest.MonkeyPatch, nova_env: dict[str, str]) -> None:
    # A stream that something keeps open too long ends the test instead of hanging it.
    monkeypatch.setenv("NOVA_EVENTS_MAX_SECONDS", "240")
    monkeypatch.setenv("NOVA_EVENTS_KEEPALIVE_SECONDS", "2")


def upload_apod4(client: FlaskClient, session: str, apod: Path, **extra: object) -> int:
    args = {"session": session, **APOD4_HINT, **extra}
    response = client.post(
        "/api/upload",
        data={
            "request-json": json.dumps(args),
            "file": (io.BytesIO((apod / "apod4.jpg").read_bytes()), "apod4.jpg"),
        },
    )
    answer = json.loads(response.get_data(as_text=True))
    assert answer["status"] == "success", answer
    return int(answer["subid"])


def job_of(client: FlaskClient, submission_id: int) -> int:
    def has_job() -> bool:
        return bool(api_call(client, f"submissions/{submission_id}").get("jobs"))

    assert wait_for(has_job, 60), "the upload was not read"
    return int(api_call(client, f"submissions/{submission_id}")["jobs"][0])  # type: ignore[index]


def stream(client: FlaskClient, path: str, **headers: str) -> list[Event]:
    response = client.get(path, headers=headers, buffered=False)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    try:
        return list(read_events(response.iter_encoded()))
    finally:
        response.close()


def test_a_stream_sees_every_stage_of_a_real_solve_in_order_and_resumes(
    live_settings: None,
    app: Flask,
    client: FlaskClient,
    make_user: Callable[[str], tuple[int, str]],
    worker_process: Callable[[], object],
    apod: Path,
) -> None:
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    submission_id = upload_apod4(client, session, apod)
    # The stream opens before any worker runs: it sees the job from its first state on.
    submission_events: list[Event] = []
    watcher = app.test_client()
    reading = threading.Thread(
        target=lambda: submission_events.extend(
            stream(watcher, f"/api/submissions/{submission_id}/events")
        )
    )
    reading.start()
    worker_process()
    job_id = job_of(client, submission_id)
    job_events = stream(client, f"/api/jobs/{job_id}/events")
    reading.join(timeout=240)
    assert not reading.is_alive()

    names = [event.name for event in job_events]
    # The stream opened while the job waited or had started: every stage from then on, in
    # order, each once, ending with the solve.
    order = ["queued", "extracting", "solving", "success"]
    assert names == order[order.index(names[0]) :], names
    assert names[0] in ("queued", "extracting"), names  # apod4 takes seconds to extract
    assert [event.id for event in job_events] == sorted({event.id for event in job_events})
    # Each event's data is /api/jobs/J's answer at that moment.
    assert job_events[-1].data == api_call(client, f"jobs/{job_id}")
    assert job_events[-1].data["status"] == "success"

    assert [event.name for event in submission_events][-1] == "success"
    assert submission_events[0].name == "queued"
    assert "extracting" in [event.name for event in submission_events]
    assert submission_events[-1].data == api_call(client, f"submissions/{submission_id}")
    assert submission_events[-1].data["jobs"] == [job_id]

    # Last-Event-ID: after the second event, only what came later (the current state).
    resumed = stream(
        client, f"/api/jobs/{job_id}/events", **{"Last-Event-ID": str(job_events[0].id)}
    )
    assert [event.name for event in resumed] == ["success"]
    assert resumed[0].id == job_events[-1].id
    # After the final event: nothing more, and 204 tells EventSource to stop reconnecting.
    done = client.get(
        f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": str(job_events[-1].id)}
    )
    assert done.status_code == 204


def test_a_private_job_streams_to_its_owner_only(
    live_settings: None,
    monkeypatch: pytest.MonkeyPatch,
    app: Flask,
    client: FlaskClient,
    make_user: Callable[[str], tuple[int, str]],
    apod: Path,
) -> None:
    change_settings(app, ID_ACCESS_HOURS=0)  # the id alone opens nothing (nova.services.access)
    _, ann_key = make_user("ann@example.org")
    _, bob_key = make_user("bob@example.org")
    ann = app.test_client()
    bob = app.test_client()
    ann_session = api_login(ann, ann_key)  # the API session cookie names the caller
    api_login(bob, bob_key)
    submission_id = upload_apod4(ann, ann_session, apod, publicly_visible="n")
    with app.app_context():
        from nova.services import intake, jobs

        job_ids = intake.process_submission(submission_id)  # read, not solved: no worker
    job_id = job_ids[0]
    for path in (f"/api/jobs/{job_id}/events", f"/api/submissions/{submission_id}/events"):
        for other in (bob, app.test_client()):
            refused = other.get(path)
            assert refused.status_code == 404, path
            assert "does not exist" in json.loads(refused.get_data(as_text=True))["errormessage"]
    # The owner's stream opens at the job's current state; ending the job ends the stream.
    response = ann.get(f"/api/jobs/{job_id}/events", buffered=False)
    try:
        assert response.status_code == 200
        seen = read_events(response.iter_encoded())
        first = next(seen)
        # The status answer of a waiting job, with its place in the queue (nova.services.status; it
        # was never queued here, so the place is unknown: null).
        assert first.name == "queued"
        assert first.data == {"status": "processing", "queue_position": None, "eta_seconds": None}
        with app.app_context():
            from nova.services import intake, jobs

            assert jobs.claim_job(job_id)
            jobs.finish_job(
                job_id, numbers=None, wcs_header=None, failure_reason="test end", sources=0
            )
        rest = list(seen)
    finally:
        response.close()  # an open stream keeps its request context pushed
    assert [event.name for event in rest] == ["failure"]
    assert rest[0].data == {"status": "failure"}


def test_watchers_over_the_cap_are_told_to_poll(
    live_settings: None,
    app: Flask,
    client: FlaskClient,
    make_user: Callable[[str], tuple[int, str]],
    apod: Path,
) -> None:
    change_settings(app, EVENTS_MAX_WATCHERS=1)
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    submission_id = upload_apod4(client, session, apod)
    first = app.test_client().get(f"/api/submissions/{submission_id}/events", buffered=False)
    assert first.status_code == 200
    next(read_events(first.iter_encoded()))  # it holds its place while it waits
    refused = app.test_client().get(f"/api/submissions/{submission_id}/events")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"].isdigit()
    assert "poll" in json.loads(refused.get_data(as_text=True))["errormessage"]
    # The status answers as ever meanwhile.
    assert api_call(client, f"submissions/{submission_id}")["user_images"] == []
    first.close()  # the place is free again
    again = app.test_client().get(f"/api/submissions/{submission_id}/events", buffered=False)
    assert again.status_code == 200
    again.close()


def test_progress_numbers_grow_with_every_step_and_retry() -> None:
    job = Job(status=JobStatus.QUEUED, stage="queued", attempts=0)
    steps = []
    for status, stage, attempts in [
        (JobStatus.QUEUED, "queued", 0),
        (JobStatus.SOLVING, "starting", 1),
        (JobStatus.SOLVING, "extracting", 1),
        (JobStatus.SOLVING, "solving", 1),
        (JobStatus.QUEUED, "queued", 1),  # the worker died: the reconciler retries
        (JobStatus.SOLVING, "starting", 2),
        (JobStatus.SOLVING, "extracting", 2),
        (JobStatus.SUCCESS, "done", 2),
    ]:
        job.status, job.stage, job.attempts = status, stage, attempts
        steps.append(events.job_progress(job))
    numbers = [step.number for step in steps]
    assert numbers == sorted(numbers)
    # "starting" is still the waiting step (same event); every other step is a new one.
    assert numbers[0] == numbers[1] and len(set(numbers)) == len(numbers) - 2
    assert [step.event for step in steps] == [
        "queued",
        "queued",
        "extracting",
        "solving",
        "queued",
        "queued",
        "extracting",
        "success",
    ]
    assert [step.final for step in steps] == [False] * 7 + [True]
    # A job that ended without ever running (a refused upload) is final at once.
    refused = Job(status=JobStatus.FAILURE, stage="failed", attempts=0)
    assert events.job_progress(refused) == events.Progress(3, "failure", True)
