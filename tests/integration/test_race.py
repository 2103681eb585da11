"""Blind and wide-hinted solves race scale bands in parallel engines (issue #20), with the
real engine: the first solution wins and the other engines are gone at once, a job never
runs more engines than its budget, the samples solve as before and negatives do not."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from nova.config import Settings, default_engine_processes
from nova.engine import job_files, race, solver
from nova.engine.input_formats import PreparedInput
from nova.engine.params import SolveParams
from tests.integration.test_solve_apod import APOD_CENTRES, TOLERANCE_DEG, angular_distance
from tests.support import starfields
from tests.support.processes import wait_for

pytestmark = pytest.mark.engine

INDEX_DIRS = [Path("/usr/share/astrometry")]
# Pixel scales of the samples' known solutions (arcsec per pixel), engine-performance.md.
APOD_SCALES = {"apod1": 6.778, "apod2": 20.272, "apod3": 38.023, "apod4": 169.705, "apod5": 283.767}


def _axy(path: Path, width: int, low_deg: float, high_deg: float | None) -> Path:
    header = fits.Header()
    header["IMAGEW"] = width
    header["ANAPPL1"] = low_deg * 3600 / width
    if high_deg is not None:
        header["ANAPPU1"] = high_deg * 3600 / width
    fits.PrimaryHDU(header=header).writeto(path)
    return path


def _degrees(bands: list[tuple[float, float]], width: int) -> list[tuple[float, float]]:
    return [(round(low * width / 3600, 6), round(high * width / 3600, 6)) for low, high in bands]


def test_bands_split_wide_ranges_at_the_measured_width(tmp_path: Path) -> None:
    blind = _axy(tmp_path / "blind.axy", 900, 0.1, 180.0)
    assert _degrees(race.race_bands(blind, 2), 900) == [(0.1, 11.0), (round(10 / 1.1, 6), 180.0)]
    assert race.race_bands(blind, 1) == []
    # Three processes: the measured split, then the wider band at its geometric middle.
    three = _degrees(race.race_bands(blind, 3), 900)
    assert len(three) == 3 and three[0][0] == 0.1 and three[-1][1] == 180.0
    assert math.isclose(three[0][1], 1.1, rel_tol=1e-6)  # sqrt(0.1 * 10) = 1, overlapped
    # A +-20 % hint is solved quickly by one engine; a range without an upper bound is not
    # split either.
    assert race.race_bands(_axy(tmp_path / "hint.axy", 900, 51.0, 77.0), 2) == []
    assert race.race_bands(_axy(tmp_path / "open.axy", 900, 1.0, None), 2) == []
    # Wide, but not containing 10 degrees: split in the middle.
    wide = _degrees(race.race_bands(_axy(tmp_path / "wide.axy", 900, 20.0, 80.0), 2), 900)
    assert math.isclose(wide[0][1], 40.0 * 1.1) and math.isclose(
        wide[1][0], 40.0 / 1.1, rel_tol=1e-6
    )


def test_engine_processes_share_the_cpus_among_the_workers(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert default_engine_processes({}) == 1  # worker count unknown: never oversubscribe
    assert default_engine_processes({"NOVA_WORKERS": "1"}) == cpus
    assert default_engine_processes({"NOVA_WORKERS": str(cpus)}) == 1
    assert default_engine_processes({"NOVA_WORKERS": str(cpus * 4)}) == 1
    config = Settings.from_env({"NOVA_ENGINE_PROCESSES": "3", "NOVA_DATA_DIR": str(tmp_path)})
    assert config.engine_processes == 3


def _engines_in(directory: Path) -> list[int]:
    """astrometry-engine processes working under ``directory`` (others share the machine)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if state != "Z" and any(part.endswith(b"astrometry-engine") for part in command[:4]):
            if cwd.startswith(str(directory)):
                found.append(int(entry.name))
    return found


class _Watched:
    """solver.solve in a thread while the process table is sampled for its engines."""

    def __init__(self, work_dir: Path, **kwargs: object) -> None:
        self.work_dir = work_dir
        self.kwargs = kwargs
        self.outcome: solver.SolveOutcome | None = None
        self.most_engines = 0
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.outcome = solver.solve(work_dir=self.work_dir, index_dirs=INDEX_DIRS, **self.kwargs)

    def sample(self) -> None:
        self.most_engines = max(self.most_engines, len(_engines_in(self.work_dir)))


def _apod(apod: Path, name: str) -> PreparedInput:
    path = apod / f"{name}.jpg"
    width, height = Image.open(path).size
    return PreparedInput("jpeg", path, width, height)


def _assert_known_solution(work_dir: Path, name: str, prepared: PreparedInput) -> None:
    header = fits.getheader(work_dir / job_files.WCS_NAME)
    wcs = WCS(header, naxis=2)
    ra, dec = wcs.all_pix2world([[prepared.width / 2 + 0.5, prepared.height / 2 + 0.5]], 1)[0]
    known_ra, known_dec = APOD_CENTRES[name][:2]
    assert angular_distance(ra, dec, known_ra, known_dec) < TOLERANCE_DEG, (name, ra, dec)
    scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600
    assert math.isclose(scale, APOD_SCALES[name], rel_tol=0.005), (name, scale)


def test_a_blind_solve_races_bands_and_the_losers_are_gone(apod: Path, tmp_path: Path) -> None:
    prepared = _apod(apod, "apod1")
    watched = _Watched(
        tmp_path, params=SolveParams(), prepared=prepared, time_limit=120, engine_processes=2
    )
    watched.thread.start()
    # Both bands' engines run at once (apod1's 10-180 degree band never ends by itself).
    assert wait_for(lambda: len(_engines_in(tmp_path)) == 2 or not watched.thread.is_alive(), 60)
    assert len(_engines_in(tmp_path)) == 2
    while watched.thread.is_alive():
        watched.sample()
        watched.thread.join(0.05)
    assert watched.outcome is not None and watched.outcome.solved
    assert watched.most_engines <= 2
    # The losing engine was killed with the win, not left to search.
    assert _engines_in(tmp_path) == []
    log = (tmp_path / job_files.LOG_NAME).read_text()
    assert "scale band 1 of 2" in log and "(solved first)" in log and "(stopped)" in log
    assert not list(tmp_path.glob(f"{job_files.BAND_DIR_PREFIX}*"))
    _assert_known_solution(tmp_path, "apod1", prepared)


@pytest.mark.parametrize("name", sorted(APOD_CENTRES))
def test_the_samples_solve_blind_to_the_same_answer_with_bands(
    apod: Path, tmp_path: Path, name: str
) -> None:
    prepared = _apod(apod, name)
    outcome = solver.solve(
        SolveParams(), prepared, tmp_path, index_dirs=INDEX_DIRS, time_limit=240,
        engine_processes=2,
    )  # fmt: skip
    assert outcome.solved, outcome.reason
    _assert_known_solution(tmp_path, name, prepared)


def test_concurrent_jobs_keep_to_their_budget(apod: Path, tmp_path: Path) -> None:
    """Two blind jobs with a budget of one engine each (2 workers on 2 CPUs) never run more
    than one engine each; a job with a budget of two never more than two."""
    jobs = [
        _Watched(
            tmp_path / f"job{number}",
            params=SolveParams(),
            prepared=_apod(apod, "apod1"),
            time_limit=120,
            engine_processes=budget,
        )  # fmt: skip
        for number, budget in ((1, 1), (2, 1), (3, 2))
    ]
    for job in jobs:
        job.work_dir.mkdir()
        job.thread.start()
    while any(job.thread.is_alive() for job in jobs):
        for job in jobs:
            job.sample()
        time.sleep(0.02)
    assert [job.outcome.solved for job in jobs if job.outcome] == [True, True, True]
    assert [job.most_engines for job in jobs][:2] == [1, 1]
    assert 1 <= jobs[2].most_engines <= 2
    assert _engines_in(tmp_path) == []


def _star_list(
    path: Path, xs: np.ndarray, ys: np.ndarray, width: int, height: int
) -> PreparedInput:
    columns = [
        fits.Column(name="X", format="E", array=xs),
        fits.Column(name="Y", format="E", array=ys),
    ]
    fits.BinTableHDU.from_columns(columns).writeto(path)
    return PreparedInput("xylist", path, width, height)


def _negatives(apod: Path, directory: Path) -> dict[str, PreparedInput]:
    rng = np.random.default_rng(20)
    noise = _star_list(
        directory / "noise.xyls", rng.uniform(1, 1024, 150), rng.uniform(1, 768, 150), 1024, 768
    )
    with fits.open(apod / "apod4.xyls") as hdus:
        real_x = np.asarray(hdus[1].data["X"], dtype=float)[:300]
        real_y = np.asarray(hdus[1].data["Y"], dtype=float)[:300]
    # The real stars' x with another star's y: the same density and brightness order, no sky.
    scrambled = _star_list(directory / "scrambled.xyls", real_x, rng.permutation(real_y), 719, 507)
    # A 0.5-degree field of catalogue stars: too few for any index to match (17 stars).
    truth = starfields.tan_wcs(100.2, 9.8, width=1024, height=768, pixscale=0.5 * 3600 / 1024)
    text = starfields.render(
        truth, starfields.catalogue_stars(100.2, 9.8, 0.4), width=1024, height=768,
        noise=0.3, rng=rng,
    )  # fmt: skip
    narrow_xy = np.loadtxt(text.decode().splitlines(), ndmin=2)
    narrow = _star_list(directory / "narrow.xyls", narrow_xy[:, 0], narrow_xy[:, 1], 1024, 768)
    return {"noise": noise, "scrambled": scrambled, "too narrow": narrow}


def test_negatives_do_not_solve_with_bands(apod: Path, tmp_path: Path) -> None:
    for name, prepared in _negatives(apod, tmp_path).items():
        work_dir = tmp_path / name.replace(" ", "-")
        work_dir.mkdir()
        outcome = solver.solve(
            SolveParams(), prepared, work_dir, index_dirs=INDEX_DIRS, time_limit=60,
            engine_processes=2,
        )  # fmt: skip
        assert not outcome.solved, name
        assert not (work_dir / job_files.WCS_NAME).exists(), name
        assert _engines_in(work_dir) == [], name
