"""The warm engine (astrometry.net's solver as a library, kept in the worker) against the
subprocess engine, its deadline, its crash fallback, and the quick-solve queue.

Everything runs the real engine, the real library and the sample photos.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from flask.testing import FlaskClient
from PIL import Image

from nova.db.models import Job, JobStatus
from nova.engine import commands, job_files, solver, warm_engine
from nova.engine.input_formats import PreparedInput
from nova.engine.params import parse_solve_params
from nova.engine.process import run_with_deadline
from nova.extensions import db
from nova.infra import jobqueue
from nova.services import intake, queueing
from tests.integration.test_solve_apod import (
    APOD_CENTRES,
    assert_centre,
    finished_job,
    scale_hint,
    upload,
)
from tests.support.processes import wait_for

pytestmark = pytest.mark.engine

INDEX_DIRS = [Path("/usr/share/astrometry")]
SAME_CENTRE_ARCSEC = 10.0
SAME_SCALE_FRACTION = 0.001


@pytest.fixture(scope="module")
def engine() -> warm_engine.WarmEngine:
    """The library must be installed (setup.cfg requires it): its absence fails, never skips."""
    assert warm_engine.available(), "pip install astrometry (setup.cfg lists it)"
    loaded = warm_engine.preload(INDEX_DIRS)
    assert loaded is not None
    return loaded


def prepared(apod: Path, name: str) -> PreparedInput:
    path = apod / f"{name}.jpg"
    with Image.open(path) as image:
        width, height = image.size
    return PreparedInput(kind="jpeg", path=path, width=width, height=height)


def solution(wcs_path: Path) -> tuple[float, float, float, fits.Header]:
    """Centre RA, Dec of the image and pixel scale (arcsec) from a wcs.fits."""
    header = fits.getheader(wcs_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, relax=True, naxis=2)
    ra, dec = wcs.all_pix2world([(header["IMAGEW"] + 1) / 2], [(header["IMAGEH"] + 1) / 2], 1)
    scale = math.sqrt(abs(header["CD1_1"] * header["CD2_2"] - header["CD1_2"] * header["CD2_1"]))
    return float(ra[0]), float(dec[0]), scale * 3600, header


def separation_arcsec(a: tuple[float, float], b: tuple[float, float]) -> float:
    ra1, dec1, ra2, dec2 = map(math.radians, (*a, *b))
    cos = math.sin(dec1) * math.sin(dec2) + math.cos(dec1) * math.cos(dec2) * math.cos(ra1 - ra2)
    return math.degrees(math.acos(min(1.0, cos))) * 3600


def run_subprocess_engine(axy: Path, work_dir: Path) -> float:
    """astrometry-engine on a copy of ``axy`` in ``work_dir``, as solver.solve runs it."""
    work_dir.mkdir()
    shutil.copy(axy, work_dir / job_files.AXY_NAME)
    (work_dir / "engine.cfg").write_text(commands.engine_config(INDEX_DIRS, 300))
    started = time.perf_counter()
    code = run_with_deadline(
        ["astrometry-engine", "-c", "engine.cfg", job_files.AXY_NAME],
        work_dir,
        work_dir / job_files.LOG_NAME,
        time.monotonic() + 300,
    )
    assert code == 0, (work_dir / job_files.LOG_NAME).read_text()[-2000:]
    return time.perf_counter() - started


def assert_same_answer(warm_dir: Path, engine_dir: Path) -> None:
    ra, dec, scale, header = solution(warm_dir / job_files.WCS_NAME)
    ra_e, dec_e, scale_e, header_e = solution(engine_dir / job_files.WCS_NAME)
    assert separation_arcsec((ra, dec), (ra_e, dec_e)) < SAME_CENTRE_ARCSEC, (ra, dec, ra_e, dec_e)
    assert abs(scale / scale_e - 1) < SAME_SCALE_FRACTION, (scale, scale_e)
    assert header["CTYPE1"] == header_e["CTYPE1"]
    assert header.get("A_ORDER") == header_e.get("A_ORDER")
    assert (header["IMAGEW"], header["IMAGEH"]) == (header_e["IMAGEW"], header_e["IMAGEH"])
    # rdls and corr: the columns the products and downloads read, and about the same stars.
    for name in (job_files.RDLS_NAME, job_files.CORR_NAME):
        with fits.open(warm_dir / name) as warm, fits.open(engine_dir / name) as cold:
            assert set(cold[1].columns.names) <= set(warm[1].columns.names), name
            rows, rows_e = len(warm[1].data), len(cold[1].data)
            assert abs(rows - rows_e) <= max(3, 0.2 * rows_e), (name, rows, rows_e)


@pytest.mark.parametrize("name", list(APOD_CENTRES))
def test_warm_engine_gives_the_subprocess_engines_answer(
    engine: warm_engine.WarmEngine, apod: Path, tmp_path: Path, name: str
) -> None:
    """Each photo, hinted, through solver.solve with the warm engine; then astrometry-engine
    on the very same job.axy: same centre, same scale, same kind of products."""
    params = parse_solve_params(
        {"scale_lower": APOD_CENTRES[name][2] * 0.8, "scale_upper": APOD_CENTRES[name][2] * 1.2}
    )
    warm_dir = tmp_path / "warm"
    warm_dir.mkdir()
    outcome = solver.solve(
        params, prepared(apod, name), warm_dir, index_dirs=INDEX_DIRS, time_limit=120, warm=engine
    )
    assert outcome.solved, (warm_dir / job_files.LOG_NAME).read_text()[-3000:]
    log = (warm_dir / job_files.LOG_NAME).read_text()
    assert "in the warm engine" in log and "astrometry-engine -c" not in log
    run_subprocess_engine(warm_dir / job_files.AXY_NAME, tmp_path / "engine")
    assert_same_answer(warm_dir, tmp_path / "engine")
    ra, dec, _, _ = solution(warm_dir / job_files.WCS_NAME)
    expected = APOD_CENTRES[name]
    assert separation_arcsec((ra, dec), expected[:2]) < 0.05 * 3600


@pytest.mark.parametrize(
    "options",
    [
        {"tweak_order": 0, "parity": 0},  # no SIP; the engine's parity "pos"
        {"tweak_order": 3, "center_ra": 187.0, "center_dec": 56.7, "radius": 25},
        {},  # blind, nova's defaults
    ],
    ids=["no-tweak-parity", "sip3-position", "blind"],
)
def test_options_reach_the_library_as_they_reach_the_engine(
    engine: warm_engine.WarmEngine, apod: Path, tmp_path: Path, options: dict[str, object]
) -> None:
    warm_dir = tmp_path / "warm"
    warm_dir.mkdir()
    outcome = solver.solve(
        parse_solve_params(options),
        prepared(apod, "apod4"),
        warm_dir,
        index_dirs=INDEX_DIRS,
        time_limit=120,
        warm=engine,
    )
    assert outcome.solved, (warm_dir / job_files.LOG_NAME).read_text()[-3000:]
    run_subprocess_engine(warm_dir / job_files.AXY_NAME, tmp_path / "engine")
    assert_same_answer(warm_dir, tmp_path / "engine")
    header = fits.getheader(warm_dir / job_files.WCS_NAME)
    if options.get("tweak_order") == 0:
        assert header["CTYPE1"] == "RA---TAN" and "A_ORDER" not in header
    else:
        assert header["A_ORDER"] == options.get("tweak_order", 2)


def test_options_the_library_cannot_take_go_to_the_subprocess_engine(
    engine: warm_engine.WarmEngine, apod: Path, tmp_path: Path
) -> None:
    """--crpix-center is the engine's alone: the job still solves, with astrometry-engine."""
    params = parse_solve_params({**_hint(33.0), "crpix_center": True})
    outcome = solver.solve(
        params,
        prepared(apod, "apod4"),
        tmp_path,
        index_dirs=INDEX_DIRS,
        time_limit=120,
        warm=engine,
    )
    assert outcome.solved
    log = (tmp_path / job_files.LOG_NAME).read_text()
    assert "warm engine not used: job.axy asks for ANCRPIXC" in log
    assert "astrometry-engine -c" in log
    header = fits.getheader(tmp_path / job_files.WCS_NAME)
    assert header["CRPIX1"] == pytest.approx((header["IMAGEW"] + 1) / 2)


def _hint(width: float) -> dict[str, float]:
    return {"scale_lower": width * 0.8, "scale_upper": width * 1.2}


def _children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in found.stdout.split()]


def test_the_time_limit_stops_the_warm_engine(
    engine: warm_engine.WarmEngine, apod: Path, tmp_path: Path
) -> None:
    """apod5 blind at full resolution takes one library search over 20 s: a 6 s limit stops
    it. One engine process, so that no bands are raced (raced, they solve it in about 5 s,
    and in astrometry-engine processes rather than the library)."""
    params = parse_solve_params({"downsample_factor": 1})
    # The session's redis and PostgreSQL servers are children of this process too.
    children_before = set(_children_of(os.getpid()))
    started = time.monotonic()
    outcome = solver.solve(
        params,
        prepared(apod, "apod5"),
        tmp_path,
        index_dirs=INDEX_DIRS,
        time_limit=6,
        warm=engine,
        engine_processes=1,
    )
    elapsed = time.monotonic() - started
    assert not outcome.solved
    assert outcome.reason == "Stopped after the time limit of 6 s without a solution."
    assert elapsed < 6 + warm_engine.HARD_KILL_GRACE_SECONDS + 1.0, elapsed
    log = (tmp_path / job_files.LOG_NAME).read_text()
    assert "$ warm engine:" in log  # the library searched (one process races no bands)
    assert "in the warm engine" not in log  # and never finished
    assert set(_children_of(os.getpid())) <= children_before  # the fork is gone
    assert not (tmp_path / job_files.WCS_NAME).exists()


def test_a_crash_inside_the_library_falls_back_to_the_subprocess_engine(
    engine: warm_engine.WarmEngine, apod: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one mock allowed: the library call aborts (as a segfault would end it)."""
    monkeypatch.setattr(engine.solver, "solve", lambda *args, **kwargs: os.abort())
    outcome = solver.solve(
        parse_solve_params(_hint(33.0)),
        prepared(apod, "apod4"),
        tmp_path,
        index_dirs=INDEX_DIRS,
        time_limit=120,
        warm=engine,
    )
    assert outcome.solved
    log = (tmp_path / job_files.LOG_NAME).read_text()
    assert "killed by signal 6 (SIGABRT); solving with astrometry-engine instead" in log
    assert "astrometry-engine -c" in log
    ra, dec, _, _ = solution(tmp_path / job_files.WCS_NAME)
    assert separation_arcsec((ra, dec), APOD_CENTRES["apod4"][:2]) < 0.05 * 3600


# --- with real workers ------------------------------------------------------------------------

CRASHING_WORKER = (
    "import os, astrometry\n"
    "astrometry.Solver.solve = lambda *args, **kwargs: os.abort()\n"
    "from nova.cli import main\n"
    "main(['worker'])\n"
)


@pytest.fixture
def workers(
    monkeypatch: pytest.MonkeyPatch, worker_process: Callable[..., subprocess.Popen[bytes]]
) -> Callable[..., subprocess.Popen[bytes]]:
    """conftest's worker_process, with the warm engine on and no result reuse."""
    monkeypatch.setenv("NOVA_REUSE_RESULTS", "false")
    monkeypatch.setenv("NOVA_WARM_ENGINE", "true")
    return worker_process


def job_of(submission_id: int) -> Job | None:
    db.session.rollback()  # end the read transaction: see what the worker committed
    from nova.db.models import Submission

    submission = db.session.get(Submission, submission_id)
    if submission is None or not submission.user_images or not submission.user_images[0].jobs:
        return None
    return submission.user_images[0].jobs[-1]


def test_a_library_crash_in_a_real_worker_ends_in_success_via_the_fallback(
    client: FlaskClient, apod: Path, workers: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    worker = workers(CRASHING_WORKER)
    submission = upload(client, (apod / "apod4.jpg").read_bytes(), "a.jpg", **scale_hint(33.0))
    assert wait_for(lambda: (job := job_of(submission)) is not None and job.is_finished, 120, 0.2)
    job = finished_job(client, submission)
    assert job.status == JobStatus.SUCCESS, job.failure_reason
    assert_centre(job, "apod4")
    assert worker.poll() is None, "the worker survives the crash"
    log = client.get(f"/joblog/{job.id}").get_data(as_text=True)
    assert "(SIGABRT); solving with astrometry-engine instead" in log, log[-3000:]
    # The crash cost one fork, not the work horse: the job needed a single attempt.
    assert job.attempts == 1


def test_a_hinted_job_overtakes_a_queued_blind_one(
    client: FlaskClient, apod: Path, workers: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """One worker busy on a blind solve, a second blind solve queued, then a hinted job:
    the hinted job is solved before the queued blind one starts."""
    apod1 = (apod / "apod1.jpg").read_bytes()

    def queued(data: bytes, name: str, **fields: str) -> int:
        submission = upload(client, data, name, **fields)
        # Recognised here, so that the solves reach the queues in this order.
        (job_id,) = intake.process_submission(submission)
        queueing.enqueue_solve(job_id)
        return job_id

    # The upload page queued each submission too: the worker finds those already done.
    first_blind = queued(apod1, "blind1.jpg")
    assert queueing.solve_queue_for(first_blind) == jobqueue.SOLVE_QUEUE
    workers()
    assert wait_for(lambda: job_state(first_blind).status == JobStatus.SOLVING, 60, 0.05)
    second_blind = queued(apod1, "blind2.jpg", tweak_order="3")
    hinted = queued((apod / "apod4.jpg").read_bytes(), "hinted.jpg", **scale_hint(33.0))
    assert queueing.solve_queue_for(hinted) == jobqueue.QUICK_SOLVE_QUEUE
    # Positions as the status page shows them: the hinted job is next.
    assert jobqueue.queue_position(hinted) == 1 and jobqueue.queue_position(second_blind) == 2
    assert wait_for(lambda: job_state(second_blind).is_finished, 180, 0.2)
    jobs = {job_id: job_state(job_id) for job_id in (first_blind, second_blind, hinted)}
    for job in jobs.values():
        assert job.status == JobStatus.SUCCESS, (job.id, job.failure_reason)
    assert jobs[hinted].finished_at <= jobs[second_blind].started_at
    assert jobs[first_blind].finished_at <= jobs[hinted].started_at  # one worker: one at a time


def job_state(job_id: int) -> Job:
    db.session.rollback()
    job = db.session.get(Job, job_id)
    assert job is not None
    return job
