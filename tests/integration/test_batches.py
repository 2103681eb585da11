"""Time series (/api/upload_batch): a sequence of star lists solved frame by frame with the
real engine, one bad frame failing alone, a frame of another field solved blind by the
fallback, the frame limit, privacy, and recovery by the reconciler."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from astropy.io import fits
from flask import Flask
from flask.testing import FlaskClient

from nova.db.batch_models import Batch, BatchFrame
from nova.db.models import RANDOM_ID_HIGH, RANDOM_ID_LOW, Submission
from nova.engine import job_files, solver
from nova.engine.inputs import prepare_input
from nova.engine.params import parse_solve_params
from nova.extensions import db
from nova.services import reconcile
from nova.worker.chain import Chain, Solved
from nova.worker.group_run import AxyTemplate, extract_with_template
from tests.support.api import api_call, api_login
from tests.support.figures import record_figure
from tests.support.processes import run_worker
from tests.support.starfields import Frame, noise_frame, pixel_error, sequence

MakeUser = Callable[[str], tuple[int, str]]
WIDTH, HEIGHT = 1024, 768


def upload_batch(client: FlaskClient, args: dict[str, object], frames: list[Frame]) -> dict:
    response = client.post(
        "/api/upload_batch",
        data={
            "request-json": json.dumps(args),
            "file": [(io.BytesIO(frame.data), frame.name) for frame in frames],
        },
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain"
    return json.loads(response.get_data(as_text=True))


def test_a_time_series_solves_frame_by_frame(
    client: FlaskClient, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = make_user("observer@example.org")
    session = api_login(client, key)
    frames = sequence(14, seed=3)
    noise = noise_frame("clouds.txt")
    garbage = Frame("broken.txt", b"\x00\x01 not a star list \xff" * 40, None)
    # Another field, far from the sequence: the chained hints cannot fit it.
    other = sequence(1, ra=250.4, dec=36.5, prefix="elsewhere", seed=9)[0]
    sent = frames[:6] + [noise] + frames[6:9] + [other] + frames[9:11] + [garbage] + frames[11:]
    answer = upload_batch(
        client,
        {"session": session, "image_width": WIDTH, "image_height": HEIGHT},
        sent,
    )
    assert answer["status"] == "success", answer
    batch_id, subids = answer["batch"], answer["subids"]
    assert len(subids) == len(sent) == len(set(subids))

    before = api_call(client, f"batches/{batch_id}", method="GET")
    assert before["status"] == "solving" and before["total"] == len(sent)
    assert [frame["subid"] for frame in before["frames"]] == subids

    # A frame of another field is solved blind after the chain's attempt fails.
    monkeypatch.setenv("NOVA_SOLVE_TIME_LIMIT", "60")
    run_worker()

    state = api_call(client, f"batches/{batch_id}", method="GET")
    assert state["status"] == "done", state
    assert state["total"] == len(sent)
    assert state["failed"] == 2 and state["solved"] == len(sent) - 2, state
    by_name = dict(zip([f.name for f in sent], state["frames"], strict=True))
    for frame in (noise, garbage):
        entry = by_name[frame.name]
        assert entry["status"] == "failure" and entry["calibration"] is None
        assert entry["failure_reason"], entry
    assert "not supported" in by_name[garbage.name]["failure_reason"]
    assert by_name[garbage.name]["job"] is not None  # a failed job, as for /api/upload

    errors = []
    for frame in frames + [other]:
        entry = by_name[frame.name]
        assert entry["status"] == "success", entry
        calibration = entry["calibration"]
        assert set(calibration) >= {"ra", "dec", "radius", "pixscale", "orientation", "parity"}
        # Every frame is an ordinary job: nova's endpoints answer for it.
        job = entry["job"]
        assert api_call(client, f"jobs/{job}", method="GET") == {"status": "success"}
        assert api_call(client, f"jobs/{job}/calibration", method="GET")["ra"] == calibration["ra"]
        header = fits.Header.fromstring(client.get(f"/wcs_file/{job}").data.decode("latin-1"))
        assert frame.truth is not None
        errors.append(pixel_error(header, frame.truth, WIDTH, HEIGHT))
    record_figure(f"batch of {len(sent)}: worst error of a solved frame {max(errors):.3f} px")
    assert max(errors) < 1.0, errors

    logs = {f.name: client.get(f"/joblog/{by_name[f.name]['job']}").data.decode() for f in sent}
    chained = [f.name for f in frames if "chained from the solved frame" in logs[f.name]]
    assert len(chained) >= len(frames) - 2, chained  # at most the first one or two were not
    assert all("solving as an ordinary job" not in logs[name] for name in chained)
    assert "no solution with the chain's hints; solving as an ordinary job" in logs[other.name]

    # Objects in the field are made on first request, as for any job.
    first = by_name[frames[0].name]["job"]
    objects = api_call(client, f"jobs/{first}/objects_in_field", method="GET")["objects_in_field"]
    assert "NGC 2264" in objects, objects  # the Christmas Tree Cluster
    info = api_call(client, f"jobs/{first}/info", method="GET")
    assert info["objects_in_field"] == objects and set(objects) <= set(info["machine_tags"])

    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/batch_wcs/{batch_id}").data))
    names = sorted(archive.namelist())
    assert names == sorted(f.name.replace(".txt", ".wcs") for f in frames + [other])
    with fits.open(io.BytesIO(archive.read("frame0003.wcs"))) as hdus:
        assert hdus[0].header["CTYPE1"].startswith("RA---TAN")

    response = client.get(f"/api/batches/{batch_id}/calibrations.csv")
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [row["file"] for row in rows] == [f.name for f in sent]
    assert list(rows[0]) == [
        "file",
        "job",
        "ra",
        "dec",
        "orientation",
        "pixscale",
        "radius",
        "parity",
    ]
    solved_row = rows[0]
    assert float(solved_row["ra"]) == pytest.approx(by_name[sent[0].name]["calibration"]["ra"])
    assert rows[6]["ra"] == "" and rows[6]["job"] != ""

    page = client.get(f"/batches/{batch_id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "frame0000.txt" in text and f"/batch_wcs/{batch_id}" in text


def test_more_frames_than_the_limit_are_refused_and_nothing_is_stored(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    _, key = make_user("many@example.org")
    session = api_login(client, key)
    frames = [Frame(f"f{k}.txt", b"1 2\n3 4\n", None) for k in range(1001)]
    answer = upload_batch(client, {"session": session}, frames)
    assert answer == {
        "status": "error",
        "errormessage": "too many frames: 1001; a batch takes at most 1000 (NOVA_BATCH_MAX_FRAMES)",
    }
    assert db.session.query(Submission).count() == 0
    assert db.session.query(Batch).count() == 0
    none = upload_batch(client, {"session": session}, [])
    assert none["status"] == "error" and "no files" in none["errormessage"]


def test_a_private_batch_stays_private(
    app: Flask, client: FlaskClient, make_user: MakeUser
) -> None:
    _, owner_key = make_user("owner@example.org")
    _, other_key = make_user("other@example.org")
    owner = api_login(client, owner_key)
    answer = upload_batch(client, {"session": owner, "publicly_visible": "n"}, sequence(2, seed=1))
    batch_id = answer["batch"]
    # Not guessable from another's: drawn at random like submission ids.
    assert RANDOM_ID_LOW <= batch_id <= RANDOM_ID_HIGH
    mine = api_call(client, f"batches/{batch_id}", {"session": owner})
    assert mine["total"] == 2

    stranger = app.test_client()
    other = api_login(stranger, other_key)
    for who in (stranger, app.test_client()):
        args = {"session": other} if who is stranger else None
        missing = api_call(who, f"batches/{batch_id}", args)
        assert missing == {"status": "error", "errormessage": "batch does not exist"}
        assert who.get(f"/api/batches/{batch_id}/calibrations.csv").status_code == 404
        assert who.get(f"/batch_wcs/{batch_id}").status_code == 404
        assert who.get(f"/batches/{batch_id}").status_code == 404
        for subid in answer["subids"]:
            # A frame's id opens its solve result, as any private upload's does
            # (nova.services.access); its image stays private.
            result = api_call(who, f"submissions/{subid}", args)
            assert "jobs" in result, result
            for image_id in result["user_images"]:
                assert who.get(f"/user_images/{image_id}").status_code == 404
    # The answer for a private batch is the answer for one that does not exist.
    assert api_call(stranger, "batches/999999", {"session": other}) == missing
    assert client.get(f"/batches/{batch_id}").status_code == 200  # the owner's cookie


def test_the_reconciler_queues_a_lost_batch_as_a_batch(
    app: Flask, client: FlaskClient, make_user: MakeUser, redis_url: str
) -> None:
    _, key = make_user("lost@example.org")
    session = api_login(client, key)
    answer = upload_batch(client, {"session": session, "image_width": WIDTH}, sequence(3))
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()  # redis restarted without persistence: the tasks are gone
    counts = reconcile.reconcile(3, 10)
    assert counts["requeued"] == 1, counts
    waiting = [entry.decode() for entry in connection.lrange("rq:queue:solve-quick", 0, -1)]
    assert len(waiting) == 1 and waiting[0].startswith(f"batch-{answer['batch']}-"), waiting
    assert connection.llen("rq:queue:default") == 0  # frames are not queued one by one
    assert db.session.query(BatchFrame).count() == 3
    run_worker()
    state = api_call(client, f"batches/{answer['batch']}", {"session": session})
    assert state["status"] == "done" and state["solved"] == 3, state


def test_job_axy_from_the_template_is_solve_fields_byte_for_byte(tmp_path: Path) -> None:
    """After the first frame of a group, job.axy is written without solve-field: the result
    must be exactly what solve-field --just-augment writes."""
    chain = Chain()
    chain.record(Solved(0, 100.2, 9.8, 1.25, 7.03, -1.0))
    hints = chain.hints(parse_solve_params({"image_width": WIDTH, "image_height": HEIGHT}), 3)
    assert hints is not None and hints.parity == 0 and hints.scale_err == 5.0
    template = AxyTemplate()
    frames = sequence(3, seed=4)
    written = []
    for number, frame in enumerate(frames):
        directory = tmp_path / f"frame{number}"
        directory.mkdir()
        (directory / frame.name).write_bytes(frame.data)
        prepared = prepare_input(
            directory / frame.name,
            directory,
            max_pixels=10**8,
            max_uncompressed_bytes=10**8,
            max_ratio=1000,
            max_stars=100_000,
            image_width=WIDTH,
            image_height=HEIGHT,
        )
        log = directory / "log"
        deadline = time.monotonic() + 60
        assert extract_with_template(hints, prepared, directory, log, deadline, template) == 0
        by_template = (directory / job_files.AXY_NAME).read_bytes()
        assert ("written as the group's first" in log.read_text()) == (number > 0)
        (directory / job_files.AXY_NAME).unlink()
        code = solver.extract_sources(hints, prepared, directory, log, deadline, fast=True)
        assert code == 0
        assert (directory / job_files.AXY_NAME).read_bytes() == by_template
        written.append(by_template)
    assert len(set(written)) == len(frames)  # every frame its own rows
