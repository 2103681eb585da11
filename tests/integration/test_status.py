"""Status answers from cached facts (nova.services.status): queue positions that count down under
load with the real engine, and cached answers that follow every state change and the
visibility rules at once."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from nova.db.models import Job, UserImage
from nova.extensions import db
from tests.support.api import api_call, api_login
from tests.support.processes import wait_for
from tests.support.settings import change_settings

pytestmark = pytest.mark.engine

PHOTOS = ("apod2", "apod3", "apod4", "apod2", "apod3", "apod4")
WIDTHS = {"apod2": 4.5, "apod3": 8.4, "apod4": 33.0}


def upload(client: FlaskClient, session: str, path: Path, width: float) -> int:
    args = {
        "session": session,
        "publicly_visible": "n",
        "scale_units": "degwidth",
        "scale_lower": width * 0.8,
        "scale_upper": width * 1.2,
    }
    form = {"request-json": json.dumps(args), "file": (path.open("rb"), path.name)}
    answer = json.loads(client.post("/api/upload", data=form).data)
    assert answer["status"] == "success", answer
    return int(answer["subid"])


def test_queue_positions_count_down_to_the_end(
    app: Flask,
    client: FlaskClient,
    apod: Path,
    make_user: Callable[[str], tuple[int, str]],
    worker_process: Callable[[], subprocess.Popen[bytes]],
) -> None:
    _, key = make_user("queue@example.org")
    session = api_login(client, key)
    subids = [upload(client, session, apod / f"{p}.jpg", WIDTHS[p]) for p in PHOTOS]
    # Uploads wait to be read, in order: the first is next.
    waiting = [api_call(client, f"submissions/{s}", method="GET") for s in subids]
    assert [w["queue_position"] for w in waiting] == list(range(len(subids)))
    worker_process()  # one worker: it reads every upload, then solves one job at a time
    seen: dict[int, list[dict[str, object]]] = {}
    job_of: dict[int, int] = {}

    def all_finished() -> bool:
        for subid in subids:
            if subid not in job_of:
                jobs = api_call(client, f"submissions/{subid}", method="GET")["jobs"]
                if not jobs:
                    continue
                job_of[subid] = int(jobs[0])  # type: ignore[arg-type]
        for job_id in job_of.values():
            history = seen.setdefault(job_id, [])
            if not history or history[-1]["status"] not in ("success", "failure"):
                history.append(api_call(client, f"jobs/{job_id}", method="GET"))
        return len(job_of) == len(subids) and all(
            h[-1]["status"] in ("success", "failure") for h in seen.values()
        )

    assert wait_for(all_finished, 600, interval=0.05)
    counted_down = 0
    for history in seen.values():
        assert history[-1] == {"status": "success"}, history  # finished: nova's answer only
        # None only in the moment between the job's commit and its enqueueing.
        positions = [a["queue_position"] for a in history[:-1] if a["queue_position"] is not None]
        assert all(isinstance(p, int) and p >= 0 for p in positions), history
        assert positions == sorted(positions, reverse=True), history  # never goes back up
        for answer in history[:-1]:
            assert answer["status"] in ("processing", "solving")
            # 0 once solving; a queued job may be next (0) while another one solves.
            assert answer["status"] == "processing" or answer["queue_position"] == 0
            eta = answer["eta_seconds"]
            assert eta is None or (isinstance(eta, int) and eta >= 1)
        counted_down += len(set(positions)) > 1
    # Under load at least one job was seen moving up the queue, and estimates appeared once
    # solves had ended (from their durations).
    assert counted_down >= 1, seen
    later = [a for h in seen.values() for a in h[:-1] if a["eta_seconds"] is not None]
    assert later, seen
    finished = api_call(client, f"submissions/{subids[-1]}", method="GET")
    assert "queue_position" not in finished and "eta_seconds" not in finished


def test_cached_answers_follow_state_and_visibility(
    app: Flask,
    client: FlaskClient,
    apod: Path,
    make_user: Callable[[str], tuple[int, str]],
) -> None:
    from nova.services import intake, jobs

    owner_id, key = make_user("owner@example.org")
    session = api_login(client, key)
    subid = upload(client, session, apod / "apod4.xyls", WIDTHS["apod4"])
    anonymous = app.test_client()  # no session, no cookie: an id-holder
    assert api_call(anonymous, f"submissions/{subid}", method="GET")["jobs"] == []
    intake.process_submission(subid)
    answer = api_call(anonymous, f"submissions/{subid}", method="GET")
    (job_id,) = answer["jobs"]  # the cached answer was replaced at the commit
    assert api_call(anonymous, f"jobs/{job_id}", method="GET")["status"] == "processing"
    assert jobs.claim_job(job_id)  # a bulk UPDATE: the job's version moves too
    assert api_call(anonymous, f"jobs/{job_id}", method="GET") == {
        "status": "solving",
        "queue_position": 0,
        "eta_seconds": None,
    }
    jobs.finish_job(job_id, numbers=None, wcs_header=None, failure_reason="test end", sources=0)
    assert api_call(anonymous, f"jobs/{job_id}", method="GET") == {"status": "failure"}
    # The id window closed: only the owner now; the cached facts are judged again per poll.
    change_settings(app, ID_ACCESS_HOURS=0)
    missing = {"status": "error", "errormessage": "job does not exist"}
    assert api_call(anonymous, f"jobs/{job_id}", method="GET") == missing
    assert api_call(client, f"jobs/{job_id}", {"session": session}) == {"status": "failure"}
    assert api_call(anonymous, f"jobs/{job_id}/info", method="GET") == missing
    assert api_call(anonymous, f"submissions/{subid}", method="GET")["errormessage"] == (
        "submission does not exist"
    )
    # Made public by its owner: everyone at once.
    image = db.session.get(UserImage, db.session.get(Job, job_id).user_image_id)
    image.publicly_visible = "y"
    db.session.commit()
    assert api_call(anonymous, f"jobs/{job_id}", method="GET") == {"status": "failure"}
    assert owner_id == image.user_id


def test_a_repeated_poll_takes_one_round_trip_to_redis(
    app: Flask,
    client: FlaskClient,
    apod: Path,
    make_user: Callable[[str], tuple[int, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Polls come several times a second per job while a solve runs on the same cores: each
    # round trip costs the web server a wait and a parse. Entries, versions and the queue
    # state the progress keys need go in one pipeline (a submission's jobs too, once seen).
    from nova.services import intake, jobs, queueing

    _, key = make_user("trips@example.org")
    subid = upload(client, api_login(client, key), apod / "apod4.xyls", WIDTHS["apod4"])
    for job_id in intake.process_submission(subid):  # as the worker's task does
        assert queueing.enqueue_solve(job_id)  # it waits on the queue: no worker here
    anonymous = app.test_client()  # a bare poll, as client.py and N.I.N.A. send it
    (job_id,) = api_call(anonymous, f"submissions/{subid}", method="GET")["jobs"]
    sends: list[bytes] = []
    send = redis.connection.Connection.send_packed_command

    def counted(self: redis.connection.Connection, command: Any, check_health: bool = True):
        parts = [command] if isinstance(command, bytes | memoryview) else list(command)
        sends.append(b"".join(bytes(part) for part in parts))
        return send(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counted)
    for path in (f"jobs/{job_id}", f"jobs/{job_id}/info", f"submissions/{subid}"):
        api_call(anonymous, path, method="GET")  # stores any entry still missing
        sends.clear()
        answer = api_call(anonymous, path, method="GET")
        assert answer.get("status", "processing") == "processing", path  # (a submission: none)
        assert answer["queue_position"] == 0, path
        assert len(sends) == 1, path
    # Once ended, no queue state is read: an LPOS that finds nothing scans the whole queue.
    assert jobs.claim_job(job_id)
    jobs.finish_job(job_id, numbers=None, wcs_header=None, failure_reason="test end", sources=0)
    for path in (f"jobs/{job_id}", f"jobs/{job_id}/info", f"submissions/{subid}"):
        api_call(anonymous, path, method="GET")
        sends.clear()
        answer = api_call(anonymous, path, method="GET")
        assert "queue_position" not in answer, path
        assert len(sends) == 1 and b"LPOS" not in sends[0], (path, sends)
