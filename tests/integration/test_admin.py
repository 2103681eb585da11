"""The operator's view: ``nova indexes`` and the /admin page (queues, workers, failures)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from rq import Queue, Worker
from sqlalchemy import select

from nova.db.models import Job, JobStatus, Submission, User, UserImage, utcnow
from nova.engine.indexes import IndexFile, coverage, covered_widths, scan_index_dirs, summary
from nova.extensions import db
from nova.infra import jobqueue
from tests.integration.test_site import sign_up
from tests.integration.test_solve_apod import upload
from tests.support.processes import free_port, run_worker, wait_for
from tests.support.settings import change_settings

SYSTEM_INDEXES = Path("/usr/share/astrometry")
TYCHO2 = [f"index-tycho2-{n:02d}.littleendian.fits" for n in range(7, 20)]
SMALLEST = SYSTEM_INDEXES / "index-tycho2-19.littleendian.fits"  # 0.1 MB
ROW = re.compile(r"^(\S+)\s+(\d+)\s+([\d.]+)-([\d.]+)\s+([\d,]+)\s+([\d.]+) MB\s+(.+)$")


def run_indexes(
    tmp_path: Path, *args: str | Path, index_dirs: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``nova indexes`` as the operator runs it, with only this test's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env["NOVA_DATA_DIR"] = str(tmp_path / "data")
    if index_dirs is not None:
        env["NOVA_INDEX_DIRS"] = index_dirs
    return subprocess.run(
        [sys.executable, "-m", "nova", "indexes", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def table_rows(output: str) -> list[re.Match[str]]:
    return [m for line in output.splitlines() if (m := ROW.match(line))]


def coverage_lines(output: str) -> dict[str, str]:
    """{"0.5°": "covered by 4107, 4108", "0.1°": "NOT covered", ...}"""
    found = re.findall(r"^\s+([\d.]+°)\s+((?:NOT )?covered.*)$", output, re.M)
    return dict(found)


def test_nova_indexes_on_the_installed_tycho2_files(tmp_path: Path) -> None:
    result = run_indexes(tmp_path)  # the default NOVA_INDEX_DIRS
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert [Path(row.group(1)).name for row in rows] == TYCHO2, result.stdout
    assert [int(row.group(2)) for row in rows] == list(range(4107, 4120))
    scales = [(float(row.group(3)), float(row.group(4))) for row in rows]
    # Quad diameters in arcmin (the header has radians): 22-30 for 07 ... 1400-2000 for 19,
    # each range starting where the previous one ends.
    assert scales[0] == pytest.approx((22.0, 30.0), abs=0.1)
    assert scales[-1] == pytest.approx((1400.0, 2000.0), abs=0.1)
    for (low, high), (next_low, _) in zip(scales, scales[1:], strict=False):
        assert low < high == pytest.approx(next_low, abs=0.1)
    assert all(row.group(7) == "all sky" for row in rows)
    assert int(rows[0].group(5).replace(",", "")) == 1_871_011
    assert rows[0].group(6) == "140.6"
    covered = coverage_lines(result.stdout)
    for width in ("0.5°", "1°", "2°", "5°", "10°", "30°", "60°"):
        assert covered[width].startswith("covered by"), (width, covered)
    assert covered["0.5°"] == "covered by 4107, 4108"
    assert covered["60°"].endswith("4119")
    assert covered["0.1°"] == covered["0.25°"] == "NOT covered"
    assert "Fields narrower than 0.37° are not covered" in result.stdout
    assert "4200 series" in result.stdout and "5200 series" in result.stdout
    assert "problems" not in result.stdout


def test_scan_reads_headers_and_converts_radians() -> None:
    scan = scan_index_dirs([SYSTEM_INDEXES])
    assert [f.name for f in scan] == TYCHO2 and scan.problems == []
    first = scan[0]
    assert (first.index_id, first.stars, first.quads) == (4107, 1_871_011, 4_422_373)
    assert (first.scale_lower, first.scale_upper) == pytest.approx((22.0, 30.0), abs=0.01)
    assert first.all_sky and first.healpix is None and first.size == 140_644_800
    bands = {band.width: band for band in coverage(scan)}
    assert not bands[0.1].covered and not bands[0.25].covered
    assert all(bands[w].covered and bands[w].full_sky for w in (0.5, 1, 2, 5, 10, 30, 60, 90))
    assert bands[1.0].index_ids == [4107, 4108, 4109, 4110]
    [(low, high)] = covered_widths(scan)
    assert low == pytest.approx(22 / 60) and high == 180.0


def test_one_copied_index_a_broken_file_and_a_missing_directory(tmp_path: Path) -> None:
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    shutil.copy(SMALLEST, indexes / "index-tycho2-19.fits")
    (indexes / "index-broken.fits").write_bytes(b"not a FITS file at all\n" * 200)
    truncated = SMALLEST.read_bytes()[:60_000]
    (indexes / "index-truncated.fits").write_bytes(truncated)
    (indexes / "README.txt").write_text("not an index: ignored")
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "nowhere"
    result = run_indexes(tmp_path, index_dirs=f"{indexes}:{missing},{empty}")
    assert result.returncode == 0, result.stderr  # one usable index file is enough
    out = result.stdout
    rows = table_rows(out)
    assert [(Path(r.group(1)).name, r.group(2)) for r in rows] == [("index-tycho2-19.fits", "4119")]
    assert f"{indexes / 'index-broken.fits'}: not a readable FITS file" in out
    assert f"{indexes / 'index-truncated.fits'}: truncated" in out
    assert f"{missing}: the directory does not exist" in out
    assert f"{empty}: no index-*.fits files in it" in out
    assert "README" not in out
    covered = coverage_lines(out)
    # Quads of 23-33 degrees: fields of 23 degrees and wider only.
    assert covered["30°"] == covered["60°"] == covered["90°"] == "covered by 4119"
    assert covered["10°"] == covered["0.5°"] == covered["0.1°"] == "NOT covered"
    assert "Fields narrower than 23.3° are not covered" in out
    assert "astrometry-data-tycho2-07 … 19 packages cover fields down to 0.37°" in out

    # The same through the module.
    scan = scan_index_dirs([indexes, missing, empty])
    assert [f.index_id for f in scan] == [4119]
    kinds = {p.path.name: p.kind for p in scan.problems}
    assert kinds == {
        "index-broken.fits": "unreadable",
        "index-truncated.fits": "unreadable",
        "nowhere": "missing",
        "empty": "empty",
    }


def test_no_index_file_at_all_exits_with_status_1(tmp_path: Path) -> None:
    (tmp_path / "indexes").mkdir()
    (tmp_path / "indexes" / "index-broken.fits").write_bytes(b"\0" * 2880)
    result = run_indexes(tmp_path, tmp_path / "indexes", tmp_path / "missing")
    assert result.returncode == 1
    assert "index-broken.fits: not a readable FITS file" in result.stdout
    assert "the directory does not exist" in result.stdout
    assert "No index files: no field can be solved" in result.stdout
    assert "covered by" not in result.stdout


def _tile(index_id: int, healpix: int, nside: int = 1) -> IndexFile:
    return IndexFile(
        path=Path(f"/x/index-{index_id}-{healpix:02d}.fits"),
        index_id=index_id,
        scale_lower=2.0,
        scale_upper=2.8,
        size=1,
        healpix=healpix,
        nside=nside,
    )


def test_healpix_tiles_cover_the_whole_sky_only_when_all_are_there() -> None:
    some = [_tile(4200, hp) for hp in range(5)]
    [band] = coverage(some, [0.05])
    assert band.covered and not band.full_sky and band.index_ids == [4200]
    assert "part of the sky only" in " ".join(summary(some))
    every = [_tile(4200, hp) for hp in range(12)]
    [band] = coverage(every, [0.05])
    assert band.covered and band.full_sky
    lines = summary(every)
    assert not any("narrower" in line for line in lines)  # 2 arcmin quads reach below 0.1°
    # Two disjoint scale ranges leave a gap between the field widths they cover.
    wide = IndexFile(Path("/x/index-4119.fits"), 4119, 1400.0, 2000.0, size=1)
    assert any("Fields between" in line for line in summary([*every, wide]))


# --- the /admin page -------------------------------------------------------------------------


def make_admin(client: FlaskClient, email: str = "root@example.org") -> User:
    sign_up(client, email)  # signs in
    user = db.session.scalars(select(User).where(User.email == email)).one()
    user.is_admin = True
    db.session.commit()
    return user


def test_admin_page_is_hidden_from_everyone_but_admins(
    app: Flask, client: FlaskClient, make_user: object
) -> None:
    missing_page = client.get("/no-such-page")
    for path in ("/admin", "/admin/", "/admin/indexes"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.data == missing_page.data  # nothing says the page exists
    sign_up(client, "ann@example.org")
    missing_page = client.get("/no-such-page")
    for path in ("/admin", "/admin/indexes"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.data == missing_page.data
    assert "Operator" not in client.get("/dashboard").get_data(as_text=True)
    # An API user without admin rights, by its session cookie: 404 too.
    from tests.support.api import api_login

    _, key = make_user("api@example.org")  # type: ignore[operator]
    other = app.test_client()
    api_login(other, key)
    assert other.get("/admin").status_code == 404

    admin = app.test_client()
    make_admin(admin)
    for path in ("/admin", "/admin/"):
        page = admin.get(path)
        assert page.status_code == 200, path
        assert "<h1>Operator</h1>" in page.get_data(as_text=True)


def test_admin_index_table_and_json(client: FlaskClient) -> None:
    make_admin(client)
    page = client.get("/admin").get_data(as_text=True)
    for name in TYCHO2:
        assert f">{name}</td>" in page
    assert "22.0–30.0" in page and "1400.0–2000.0" in page and "1,871,011" in page
    assert re.search(r'class="band uncovered"><td>0\.1°</td>', page)
    assert re.search(r'class="band covered"><td>0\.5°</td>', page)
    assert "Fields narrower than 0.37° are not covered" in page
    data = client.get("/admin/indexes").get_json()
    assert [f["name"] for f in data["files"]] == TYCHO2
    assert data["directories"] == [str(SYSTEM_INDEXES)]
    by_width = {band["width_deg"]: band for band in data["coverage"]}
    assert by_width[0.1]["covered"] is False and by_width[60.0]["covered"] is True
    assert data["problems"] == []


def test_admin_with_a_missing_index_directory(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    change_settings(app, INDEX_DIRS=[SYSTEM_INDEXES, tmp_path / "extra"])
    make_admin(client)
    page = client.get("/admin").get_data(as_text=True)
    assert f"{tmp_path / 'extra'}: the directory does not exist" in page
    data = client.get("/admin/indexes").get_json()
    assert data["problems"] == [
        {
            "path": str(tmp_path / "extra"),
            "kind": "missing",
            "message": "the directory does not exist",
        }
    ]


def _image(status: str, started_minutes_ago: float | None) -> Job:
    submission = Submission(original_filename="x.png")
    db.session.add(submission)
    db.session.flush()
    image = UserImage(submission_id=submission.id, kind="image", width=10, height=10)
    db.session.add(image)
    db.session.flush()
    started = (
        None if started_minutes_ago is None else utcnow() - timedelta(minutes=started_minutes_ago)
    )
    job = Job(user_image_id=image.id, status=status, stage="solving", started_at=started)
    db.session.add(job)
    db.session.commit()
    return job


def test_jobs_solving_longer_than_the_time_limit_are_listed(
    app: Flask, client: FlaskClient
) -> None:
    make_admin(client)
    assert app.config["SOLVE_TIME_LIMIT"] == 120
    lost = _image(JobStatus.SOLVING, started_minutes_ago=30)
    running = _image(JobStatus.SOLVING, started_minutes_ago=1)
    page = client.get("/admin").get_data(as_text=True)
    stuck = re.findall(r'<tr class="stuck"><td><a href="/user_images/(\d+)">(\d+)</a>', page)
    assert stuck == [(str(lost.user_image_id), str(lost.id))]
    assert str(running.id) not in [job_id for _, job_id in stuck]
    assert "30 min" in page
    assert "No failed jobs." in page
    assert "solving 2" in page  # jobs in the database, by status


def test_admin_page_when_redis_does_not_answer(app: Flask, client: FlaskClient) -> None:
    make_admin(client)
    change_settings(app, REDIS_URL=f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    app.extensions.pop("nova.redis", None)
    page = client.get("/admin")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "redis does not answer at redis://:***@127.0.0.1:" in text
    assert "s3cret" not in text
    assert "index-tycho2-19.littleendian.fits" in text  # the rest of the page is still there


def _queue_row(page: str, name: str) -> tuple[int, int, int]:
    match = re.search(
        rf'<tr class="queue" data-queue="{name}"><td>{name}</td><td class="waiting">(\d+)</td>'
        r"<td>(\d+)</td><td>(\d+)</td>",
        page,
    )
    assert match, page
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


@pytest.mark.engine
def test_admin_shows_queues_a_live_worker_and_failures(app: Flask, client: FlaskClient) -> None:
    make_admin(client)
    page = client.get("/admin").get_data(as_text=True)
    assert _queue_row(page, "default") == (0, 0, 0) and _queue_row(page, "solve") == (0, 0, 0)
    assert "No worker is registered in redis" in page

    # A blank picture: the submission waits in the queue, then its solve fails.
    blank = io.BytesIO()
    Image.new("L", (640, 480), 90).save(blank, format="PNG")
    upload(client, blank.getvalue(), "blank.png")
    assert _queue_row(client.get("/admin").get_data(as_text=True), "default")[0] == 1
    run_worker()
    job = db.session.scalars(select(Job)).one()
    db.session.refresh(job)
    assert job.status == JobStatus.FAILURE
    page = client.get("/admin").get_data(as_text=True)
    assert _queue_row(page, "default")[0] == 0 and _queue_row(page, "solve")[0] == 0
    failure = re.search(
        r'<tr class="failure"><td><a href="/user_images/(\d+)">(\d+)</a></td><td>.*?</td>'
        r"<td>(.*?)</td></tr>",
        page,
    )
    assert failure, page
    assert failure.group(1, 2) == (str(job.user_image_id), str(job.id))
    assert failure.group(3).startswith(("No stars were detected", "Only ")), failure.group(3)
    assert failure.group(3) == job.failure_reason

    # A real worker: registered in redis, then busy with a job, then gone after SIGTERM.
    connection = jobqueue.redis_connection()
    process = subprocess.Popen(
        [sys.executable, "-m", "nova", "worker"],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def registered() -> list[Worker]:
            return [w for w in Worker.all(connection=connection) if w.pid == process.pid]

        assert wait_for(lambda: registered(), 120), "the worker did not register in redis"
        [worker] = registered()

        # RQ registers a worker as "started", then sets it idle once it listens: on a busy
        # machine the page can be asked in between.
        def idle() -> bool:
            worker.refresh()  # get_state() answers what was last read from redis
            return worker.get_state() == "idle"

        assert wait_for(idle, 120), worker.get_state()
        page = client.get("/admin").get_data(as_text=True)
        row = re.search(r'<tr class="worker">(.*?)</tr>', page, re.S)
        assert row, page
        cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
        assert cells[:5] == [
            worker.name,
            worker.hostname,
            str(process.pid),
            "idle",
            ", ".join(jobqueue.ALL_QUEUES),
        ]
        assert cells[5] == "–"

        rq_job = Queue(jobqueue.SUBMISSIONS_QUEUE, connection=connection).enqueue("time.sleep", 4)

        def busy() -> bool:
            return worker_job(connection, process.pid) == rq_job.id

        assert wait_for(busy, 120), "the worker did not take the job"
        page = client.get("/admin").get_data(as_text=True)
        row = re.search(r'<tr class="worker">(.*?)</tr>', page, re.S)
        cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S)  # type: ignore[union-attr]
        assert cells[3] == "busy" and cells[5] == rq_job.id
        assert re.match(
            r'<time datetime="[\d-]+T[\d:.]+Z">[\d-]+ [\d:]+</time> \(\d+ s\)', cells[6]
        )
        assert _queue_row(page, "default")[1] == 1  # running
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert wait_for(lambda: not registered(), 60)
    assert "No worker is registered in redis" in client.get("/admin").get_data(as_text=True)


def worker_job(connection: object, pid: int) -> str | None:
    for worker in Worker.all(connection=connection):  # type: ignore[arg-type]
        if worker.pid == pid:
            return worker.get_current_job_id()
    return None
