"""The warm path and stage 1 measured in this process, without a stack."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nova_bench.bare import bare_attempts, photo_cases
from nova_bench.common import BARE_TIMEOUT, INDEX_DIR, REPO, XYLS_SIZE, log
from nova_bench.memory import MemorySampler
from nova_bench.results import Results, Settings, machine_info


def load_warm_engine(results: Results) -> Any:
    """Open the index files once, as ``nova worker`` does before it forks work horses."""
    sys.path.insert(0, str(REPO))
    from nova.engine import warm_engine

    if not warm_engine.available():
        raise RuntimeError("the astrometry package is not installed (pip install -e .)")
    start = time.perf_counter()
    engine = warm_engine.preload([INDEX_DIR])
    results.warm_load_seconds = time.perf_counter() - start
    if engine is None:
        raise RuntimeError("the warm engine could not open the index files")
    return engine


def run_warm(
    image: Path, photo: str, bounds: tuple[float, float], work_root: Path, engine: Any
) -> dict[str, Any]:
    """Nova's solve in this process: the in-process extraction (stage 1) and the warm engine,
    with bare solve-field's parameters (nova's defaults: --objs 1000, tweak order 2,
    --downsample 2 then full resolution)."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS

    from nova.engine import job_files, solver

    params, prepared = warm_inputs(image, bounds)
    work_dir = Path(tempfile.mkdtemp(dir=work_root, prefix="warm-"))
    start = time.perf_counter()
    outcome = solver.solve(
        params,
        prepared,
        work_dir,
        index_dirs=[INDEX_DIR],
        time_limit=BARE_TIMEOUT,
        warm=engine,
        fast_extraction=True,
    )
    wall = time.perf_counter() - start
    job_log = (work_dir / job_files.LOG_NAME).read_text()
    record: dict[str, Any] = {
        "wall": wall,
        "solved": outcome.solved,
        "reason": outcome.reason,
        "photo": photo,
        "fallback": "astrometry-engine -c" in job_log,
        # Every attempt's stage 1 ran in-process (none fell back to solve-field).
        "in_process": "in-process extraction:" in job_log
        and "extracting with solve-field" not in job_log,
    }
    if outcome.solved:
        header = fits.getheader(work_dir / job_files.WCS_NAME)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header, relax=True, naxis=2)
        ra, dec = wcs.all_pix2world([(header["IMAGEW"] + 1) / 2], [(header["IMAGEH"] + 1) / 2], 1)
        record["calibration"] = {"ra": float(ra[0]), "dec": float(dec[0])}
        record["status"] = "success"
    else:
        record["status"] = "failure"
    shutil.rmtree(work_dir, ignore_errors=True)
    return record


def warm_inputs(image: Path, bounds: tuple[float, float]) -> tuple[Any, Any]:
    """SolveParams and PreparedInput for a photo (or the apod4 star list) with this scale."""
    from PIL import Image

    from nova.engine.input_formats import PreparedInput
    from nova.engine.params import parse_solve_params

    params = parse_solve_params(
        {"scale_units": "degwidth", "scale_lower": bounds[0], "scale_upper": bounds[1]}
    )
    width, height = XYLS_SIZE if image.suffix == ".xyls" else Image.open(image).size
    kind = "xylist" if image.suffix == ".xyls" else "jpeg"
    return params, PreparedInput(kind=kind, path=image, width=width, height=height)


def run_stage1(image: Path, bounds: tuple[float, float], work_root: Path) -> dict[str, Any]:
    """Stage 1 alone (nova's defaults, --downsample 2): ``solve-field --just-augment`` and
    the in-process extraction, one after the other; both as the solver runs them."""
    from astropy.io import fits

    from nova.engine import job_files, solver

    params, prepared = warm_inputs(image, bounds)
    record: dict[str, Any] = {}
    tables = []
    for name, fast in (("solve_field", False), ("in_process", True)):
        work_dir = Path(tempfile.mkdtemp(dir=work_root, prefix=f"stage1-{name}-"))
        log_path = work_dir / job_files.LOG_NAME
        start = time.perf_counter()
        code = solver.extract_sources(
            params, prepared, work_dir, log_path, time.monotonic() + BARE_TIMEOUT, fast=fast
        )
        record[name] = time.perf_counter() - start
        if code != 0:
            raise RuntimeError(f"stage 1 ({name}) of {image.name} failed: {log_path.read_text()}")
        with fits.open(work_dir / job_files.AXY_NAME) as hdus:
            tables.append(bytes(hdus[1].data.tobytes()))
            record["sources"] = len(hdus[1].data)
        if fast:
            record["fell_back"] = "in-process extraction:" not in log_path.read_text()
        shutil.rmtree(work_dir, ignore_errors=True)
    record["same_sources"] = tables[0] == tables[1]
    return record


def log_stage1(photo: str, record: dict[str, Any]) -> None:
    log(
        f"{'stage 1 ' + photo:14}: solve-field --just-augment {record['solve_field']:5.2f} s   "
        f"in-process {record['in_process']:5.2f} s   {record['sources']} sources, "
        f"{'identical' if record['same_sources'] else 'DIFFERENT'}"
        f"{' (fell back)' if record['fell_back'] else ''}"
    )


def measure_warm_only(settings: Settings, work_root: Path, sampler: MemorySampler) -> Results:
    """Only section 1b: bare solve-field and the warm path, interleaved, per photo."""
    results = Results(settings=settings)
    results.machine_before = machine_info()
    started = time.perf_counter()
    engine = load_warm_engine(results) if settings.warm_engine else None
    for case in photo_cases(settings):
        image, key, bounds = case.image, case.key, case.bounds
        results.bare[key].append(bare_attempts(image, bounds, work_root, sampler, key, settings))
        results.warm[key].append(run_warm(image, case.photo, bounds, work_root, engine))
        bare_wall = results.bare[key][-1]["wall_user"]
        warm_wall = results.warm[key][-1]["wall"]
        log(
            f"{key:14} rep {case.rep + 1}: bare {bare_wall:7.2f} s"
            f"   warm {warm_wall:7.2f} s ({warm_wall / bare_wall:.2f}× bare)"
        )
        if case.hinted:
            results.stage1[case.photo].append(run_stage1(image, bounds, work_root))
            log_stage1(case.photo, results.stage1[case.photo][-1])
    results.machine_after = machine_info()
    results.total_seconds = time.perf_counter() - started
    return results
