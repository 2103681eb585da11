"""/metrics: Prometheus text that prometheus-client's own parser reads, off unless NOVA_METRICS,
behind NOVA_METRICS_TOKEN when set, and figures that match what happened: on a real stack
(gunicorn with two workers, a real worker solving a real photo, redis), counts summed across
gunicorn workers and surviving a worker's death."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from nova.infra import jobqueue, metrics
from tests.support.api import api_call, api_login
from tests.support.figures import record_figure
from tests.support.processes import wait_for
from tests.support.settings import change_settings
from tests.support.stack import live_stack

MakeUser = Callable[[str], tuple[int, str]]
TOKEN = "scrape-token-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample by (name, labels), as a Prometheus server would read the scrape."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(key)[label]: number for (sample, key), number in samples.items() if sample == name}


def test_metrics_are_off_by_default(client: FlaskClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 404


@pytest.fixture
def metrics_client(nova_env: dict[str, str], app: Flask) -> FlaskClient:
    change_settings(app, METRICS=True, METRICS_TOKEN=TOKEN)
    return app.test_client()


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.data[:500]
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response.headers["Cache-Control"] == "no-store"
    return parse(response.get_data(as_text=True))


def test_the_token_is_required_when_set(metrics_client: FlaskClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = metrics_client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"nova_" not in response.data
    samples = scrape(metrics_client)
    assert value(samples, "nova_redis_up") == 1


def test_worker_figures_kept_in_redis_read_back_as_histograms(
    metrics_client: FlaskClient,
) -> None:
    """What a worker records (on any host) reaches every scrape, buckets cumulative."""
    start = datetime(2026, 1, 1, 12, 0, 0)
    for wait, solve in ((0.3, 1.5), (4.0, 25.0), (0.05, 700.0)):
        metrics.job_ended(
            "success",
            queued_at=start,
            started_at=start + timedelta(seconds=wait),
            finished_at=start + timedelta(seconds=wait + solve),
            stage_seconds={"extracting": 0.2, "solving": solve - 0.2},
        )
    metrics.job_ended("failure")  # an unreadable upload: no worker ran it
    for outcome in ("delivered", "retrying", "retrying", "gave_up"):
        metrics.callback_delivery(outcome)
    samples = scrape(metrics_client)
    assert by_label(samples, "nova_jobs_ended_total", "status") == {"success": 3, "failure": 1}
    assert by_label(samples, "nova_callback_deliveries_total", "outcome") == {
        "delivered": 1,
        "retrying": 2,
        "gave_up": 1,
    }
    solve = {
        dict(key)["le"]: number
        for (name, key), number in samples.items()
        if name == "nova_solve_seconds_bucket"
    }
    assert (solve["1"], solve["2"], solve["20"], solve["30"], solve["600"]) == (0, 1, 1, 2, 2)
    assert solve["+Inf"] == 3
    assert value(samples, "nova_solve_seconds_count", status="success") == 3
    assert value(samples, "nova_solve_seconds_sum", status="success") == pytest.approx(726.5)
    assert value(samples, "nova_queue_wait_seconds_bucket", status="success", le="0.1") == 1
    assert value(samples, "nova_stage_seconds_count", stage="extracting") == 3
    assert value(samples, "nova_stage_seconds_bucket", stage="extracting", le="0.25") == 3
    # Nothing waits and no worker runs in this test.
    assert by_label(samples, "nova_queue_depth", "queue") == {
        name: 0 for name in jobqueue.ALL_QUEUES
    }
    assert value(samples, "nova_workers_alive") == 0
    assert by_label(samples, "nova_jobs_unfinished", "status") == {"queued": 0, "solving": 0}


def test_refused_uploads_are_counted_by_reason(
    metrics_client: FlaskClient, make_user: MakeUser
) -> None:
    _, key = make_user("ann@example.org")
    session = api_login(metrics_client, key)
    before = by_label(scrape(metrics_client), "nova_uploads_refused_total", "reason")
    assert set(before) == set(metrics.REFUSAL_REASONS)
    refusals = [
        ("upload", {"x": [1], "y": [1]}, "not_signed_in"),
        ("upload", {"session": "nosuchsession", "x": [1], "y": [1]}, "not_signed_in"),
        ("upload", {"session": session, "parity": 7, "x": [1], "y": [1]}, "invalid_argument"),
        ("upload", {"session": session, "x": [1, 2], "y": [1]}, "invalid_argument"),
        ("upload", {"session": session}, "no_input"),
        ("url_upload", {"session": session, "url": "ftp://example.org/x"}, "invalid_url"),
    ]
    for endpoint, args, _ in refusals:
        assert api_call(metrics_client, endpoint, args)["status"] == "error"
    assert metrics_client.post("/api/upload", data={}).status_code == 200  # no json
    # The form: no file, and a file that is no image.
    assert metrics_client.post("/upload", data={}).status_code == 400
    response = metrics_client.post("/upload", data={"file": (open(os.devnull, "rb"), "empty.jpg")})
    assert response.status_code == 400
    # Accepted uploads are not refusals.
    accepted = api_call(metrics_client, "upload", {"session": session, "x": [1], "y": [2]})
    assert accepted["status"] == "success"
    after = by_label(scrape(metrics_client), "nova_uploads_refused_total", "reason")
    added = {reason: after[reason] - before[reason] for reason in after}
    expected = dict.fromkeys(metrics.REFUSAL_REASONS, 0.0)
    for _, _, reason in refusals:
        expected[reason] += 1
    expected["invalid_request"] += 1
    expected["no_input"] += 1
    expected["unrecognised_file"] += 1
    assert added == expected


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _command(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.engine
def test_a_real_stack_reports_what_happened(
    tmp_path: Path, apod: Path, database_url: str, app: Flask
) -> None:
    """No worker at first: the upload waits in the queue. Then a worker solves it for real;
    refusals go to both gunicorn workers; one of them is killed and replaced."""
    with live_stack(
        tmp_path,
        NOVA_DATABASE_URL=database_url,
        NOVA_WORKERS="0",
        NOVA_WEB_WORKERS="2",
        NOVA_METRICS="true",
        NOVA_METRICS_TOKEN=TOKEN,
    ) as stack:
        base = stack.base

        def scrape_live() -> Samples:
            response = requests.get(
                f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            )
            assert response.status_code == 200, response.text[:500]
            return parse(response.text)

        assert requests.get(f"{base}/metrics", timeout=10).status_code == 401
        key = stack.nova("create-user", "ann@example.org").split("API key: ")[1].strip()

        def call(endpoint: str, args: dict[str, object], **kwargs: object) -> dict[str, object]:
            # A new connection per call: gunicorn's two workers both take some.
            response = requests.post(
                f"{base}/api/{endpoint}",
                data={"request-json": json.dumps(args)},
                timeout=30,
                **kwargs,  # type: ignore[arg-type]
            )
            return dict(response.json())

        session = str(call("login", {"apikey": key})["session"])
        refused = 12
        for _ in range(refused):
            assert (
                call("upload", {"session": session, "parity": 9, "x": [1], "y": [1]})["status"]
                == "error"
            )
        with (apod / "apod4.jpg").open("rb") as photo:
            upload = call(
                "upload",
                {"session": session, "scale_lower": 25, "scale_upper": 40},
                files={"file": ("apod4.jpg", photo)},
            )
        assert upload["status"] == "success", upload
        waiting = scrape_live()
        assert value(waiting, "nova_queue_depth", queue="default") == 1
        assert value(waiting, "nova_workers_alive") == 0
        assert value(waiting, "nova_uploads_refused_total", reason="invalid_argument") == refused

        # Kill one gunicorn worker: its counts stay, its replacement adds to them.
        gunicorn = [p for p in _children(stack.process.pid) if "gunicorn" in _command(p)]
        assert len(gunicorn) == 1, [_command(p) for p in _children(stack.process.pid)]
        web_workers = _children(gunicorn[0])
        assert len(web_workers) == 2, web_workers
        os.kill(web_workers[0], signal.SIGKILL)
        assert wait_for(lambda: len(set(_children(gunicorn[0])) - {web_workers[0]}) == 2, 120), (
            "gunicorn did not replace its worker"
        )
        # Scrapes answered by either worker (fresh connections) all see every refusal.
        for _ in range(6):
            samples = scrape_live()
            assert value(samples, "nova_uploads_refused_total", reason="invalid_argument") == (
                refused
            )

        worker_log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "nova", "worker"],
            env=stack.env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = time.monotonic()
        try:
            subid = upload["subid"]

            def solved() -> bool:
                answer = requests.get(f"{base}/api/submissions/{subid}", timeout=10).json()
                jobs = [job for job in answer["jobs"] if job]
                return bool(jobs) and requests.get(f"{base}/api/jobs/{jobs[0]}", timeout=10).json()[
                    "status"
                ] in ("success", "failure")

            assert wait_for(solved, 180, interval=0.5), (tmp_path / "worker.log").read_text()[
                -3000:
            ]
            elapsed = time.monotonic() - started
            samples = scrape_live()
            assert by_label(samples, "nova_jobs_ended_total", "status") == {
                "success": 1,
                "failure": 0,
            }
            assert value(samples, "nova_solve_seconds_count", status="success") == 1
            solve_seconds = value(samples, "nova_solve_seconds_sum", status="success")
            assert 0 < solve_seconds <= elapsed
            stages = by_label(samples, "nova_stage_seconds_count", "stage")
            assert {"preparing", "extracting", "solving", "products"} <= set(stages), stages
            assert by_label(samples, "nova_queue_depth", "queue") == {
                name: 0 for name in jobqueue.ALL_QUEUES
            }
            assert value(samples, "nova_workers_alive") == 1
            # The job's row ends before RQ marks its worker idle: wait for that, briefly.
            assert wait_for(lambda: value(scrape_live(), "nova_workers_busy") == 0, 120)
            assert by_label(samples, "nova_jobs_unfinished", "status") == {
                "queued": 0,
                "solving": 0,
            }
            assert value(samples, "nova_uploads_refused_total", reason="invalid_argument") == (
                refused
            )
            record_figure(
                f"metrics on {database_url.split(':')[0]}: apod4 solved in "
                f"{solve_seconds:.1f} s (nova_solve_seconds), stages "
                + ", ".join(
                    f"{stage} {value(samples, 'nova_stage_seconds_sum', stage=stage):.2f} s"
                    for stage in sorted(stages)
                )
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=60)
            worker_log.close()
        # A worker that stopped cleanly is gone from the count at once.
        assert value(scrape_live(), "nova_workers_alive") == 0
