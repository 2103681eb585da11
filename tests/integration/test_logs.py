"""Structured logs: every line about a submission or a job carries its ids, and secrets never
appear in the logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from astropy.io import fits
from flask.testing import FlaskClient

from nova.logs import TextFormatter
from tests.support.api import api_call, api_login
from tests.support.processes import run_worker

HINTS = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}


def json_lines(text: str) -> list[dict[str, object]]:
    """The log's lines, each of which must be one JSON object."""
    entries = []
    for line in text.splitlines():
        if line.strip():
            entries.append(json.loads(line))
    return entries


@pytest.mark.engine
def test_worker_lines_carry_submission_and_job_ids(
    client: FlaskClient, make_user, apod: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NOVA_LOG_FORMAT", "json")
    _, key = make_user("ann@example.org")
    session = api_login(client, key)
    with fits.open(apod / "apod4.xyls") as hdus:
        stars = {"x": hdus[1].data["X"].tolist(), "y": hdus[1].data["Y"].tolist()}
    subid = api_call(client, "upload", {"session": session, **stars, **HINTS})["subid"]
    job_ids = []
    worker = run_worker()
    job_ids = api_call(client, f"submissions/{subid}", method="GET")["jobs"]
    assert len(job_ids) == 1
    entries = json_lines(worker.stderr)
    about_submission = [e for e in entries if e.get("submission_id") == subid]
    about_job = [e for e in entries if e.get("job_id") == job_ids[0]]
    assert about_submission, "processing the submission is logged with its id"
    assert about_job, "the solve is logged with its job id"
    # The solve's own lines name its submission too (bound by the task).
    assert any(e.get("submission_id") == subid for e in about_job)
    # Every line from Nova's own code inside a task carries an id.
    task_loggers = (
        "nova.services.intake",
        "nova.services.jobs",
        "nova.worker.tasks",
        "nova.engine.solver",
        "nova.engine.extraction",
    )
    in_tasks = [e for e in entries if e["logger"] in task_loggers]
    assert in_tasks
    missing = [e for e in in_tasks if "job_id" not in e and "submission_id" not in e]
    assert not missing, missing
    assert key not in worker.stderr and session not in worker.stderr


def test_requests_get_an_id_that_is_logged_and_echoed(
    client: FlaskClient, make_user, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    _, key = make_user("bob@example.org")
    session = api_login(client, key)
    caplog.set_level(logging.INFO)
    response = client.post(
        "/api/upload",
        data={"request-json": json.dumps({"session": session, "x": [1.0], "y": [2.0]})},
        headers={"X-Request-ID": "client-trace-42"},
    )
    assert response.headers["X-Request-ID"] == "client-trace-42"
    subid = json.loads(response.get_data(as_text=True))["subid"]
    # An offered id that could forge log fields is replaced by a fresh one.
    odd = client.get("/api/submissions/1", headers={"X-Request-ID": 'a b" c=1'})
    assert odd.headers["X-Request-ID"] != 'a b" c=1' and len(odd.headers["X-Request-ID"]) == 16
    [record] = [r for r in caplog.records if r.getMessage().startswith(f"submission {subid} ")]
    line = TextFormatter().format(record)
    assert f"submission {subid} received: star list of 1 from user" in line
    assert line.endswith(f"[submission_id={subid} request_id=client-trace-42]")
    assert key not in caplog.text and session not in caplog.text
