"""Solve files here and now, without the service: what ``nova solve FILE...`` runs.

No redis, no database, no web server: each file goes through the workers' own path
(``prepare_input`` in a sandboxed child, header hints, then ``solver.solve`` with the same
engine, index files, time limit and extraction settings, then nova's calibration numbers),
in a temporary work directory.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from nova.config import Settings
from nova.engine import header_files, hints, job_files, sandbox, solver
from nova.engine.calibration import compute_calibration, nova_calibration, read_wcs_header
from nova.engine.input_formats import PreparedInput, UnsupportedInput
from nova.engine.inputs import prepare_input
from nova.engine.params import SolveParams
from nova.services import intake

# Products written with --outdir, as DIR/<file stem><suffix> (only the log when unsolved).
PRODUCTS = {
    "wcs": (job_files.WCS_NAME, ".wcs"),
    "corr": (job_files.CORR_NAME, ".corr"),
    "rdls": (job_files.RDLS_NAME, ".rdls"),
    "axy": (job_files.AXY_NAME, ".axy"),
    "log": (job_files.LOG_NAME, ".log"),
}

SOLVED = "solved"
NOT_SOLVED = "failure"  # nova's word for a job that ended without a solution
BAD_INPUT = "error"  # the file could not be read as an image or a star list


@dataclass
class FileResult:
    file: str
    status: str  # SOLVED, NOT_SOLVED or BAD_INPUT
    seconds: float
    calibration: dict[str, float] | None = None
    reason: str | None = None  # why it is not solved
    sources: int | None = None  # sources handed to the engine
    products: dict[str, str] = field(default_factory=dict)  # product name -> path written

    def summary(self) -> str:
        """One line for a person reading a CI log."""
        if self.calibration is not None:
            c = self.calibration
            return (
                f"{self.file}: solved in {self.seconds:.1f} s: RA {c['ra']:.5f} Dec "
                f"{c['dec']:.5f} (deg), {c['pixscale']:.3f} arcsec/pixel, field "
                f"{c['width_arcsec'] / 60:.1f}x{c['height_arcsec'] / 60:.1f} arcmin, "
                f"orientation {c['orientation']:.2f} deg, parity {c['parity']:g}"
            )
        word = "not solved" if self.status == NOT_SOLVED else "cannot be read"
        return f"{self.file}: {word} ({self.seconds:.1f} s): {self.reason}"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "status": self.status,
            "calibration": self.calibration,
            "failure_reason": self.reason,
            "sources": self.sources,
            "seconds": round(self.seconds, 3),
            "products": self.products,
        }


def solve_file(
    path: Path,
    params: SolveParams,
    *,
    index_dirs: list[Path],
    time_limit: float,
    config: Settings,
    outdir: Path | None = None,
    wcs_out: Path | None = None,
) -> FileResult:
    """Solve one file as a worker solves a job: read it in a sandboxed child within the
    NOVA_DECODE_* limits and the input bounds, then header hints first, then ``params``,
    all within ``time_limit``. Never raises for a bad file (status BAD_INPUT says why)."""
    started = time.monotonic()
    deadline = started + time_limit
    with tempfile.TemporaryDirectory(prefix="nova-solve-") as tmp:
        work_dir = Path(tmp)
        try:
            prepared = _read_input(path, work_dir, params, config, time_limit)
        except (sandbox.DecodeLimitExceeded, UnsupportedInput, OSError) as exc:
            return FileResult(str(path), BAD_INPUT, time.monotonic() - started, reason=str(exc))
        except sandbox.DecodeCrashed:
            reason = "The file could not be read (its decoder failed)."
            return FileResult(str(path), BAD_INPUT, time.monotonic() - started, reason=reason)
        use_header = params.use_header_hints and config.use_header_hints
        header, notes = header_files.read_prepared(prepared) if use_header else (None, [])
        outcome = solver.solve(
            params,
            prepared,
            work_dir,
            index_dirs=index_dirs,
            time_limit=time_limit,
            fast_extraction=config.fast_extraction,
            deadline=deadline,
            header_attempts=hints.plan_attempts(params, header, prepared.width, prepared.height),
            ignore_file_wcs=use_header,
        )
        result = FileResult(
            str(path),
            SOLVED if outcome.solved else NOT_SOLVED,
            0.0,
            reason=outcome.reason,
            sources=outcome.sources,
        )
        if outcome.solved:
            header = read_wcs_header(work_dir / job_files.WCS_NAME)
            numbers = compute_calibration(
                header, prepared.width, prepared.height, y_axis_down=prepared.y_axis_down
            )
            result.calibration = nova_calibration(numbers)
            if wcs_out is not None:
                result.products["wcs"] = _copy(work_dir / job_files.WCS_NAME, wcs_out)
        if outdir is not None:  # the log of a failed solve too: it says what went wrong
            result.products.update(_copy_products(work_dir, path, outdir))
    result.seconds = time.monotonic() - started
    return result


def _read_input(
    path: Path, work_dir: Path, params: SolveParams, config: Settings, time_limit: float
) -> PreparedInput:
    """``path`` read as a worker reads an upload: in a sandboxed child, within the limits."""
    read = partial(
        prepare_input,
        path.absolute(),  # the engine runs in the work directory
        work_dir,
        image_width=params.image_width,
        image_height=params.image_height,
        **intake.input_limits(config),
    )
    return sandbox.run_limited(read, limits=intake.decode_limits(time_limit, config))


def _copy_products(work_dir: Path, path: Path, outdir: Path) -> dict[str, str]:
    """Copy the products the engine left in ``work_dir`` to ``outdir``; name -> path written."""
    written = {}
    for name, (source, suffix) in PRODUCTS.items():
        if (work_dir / source).exists():
            target = outdir / (product_stem(path) + suffix)
            written[name] = _copy(work_dir / source, target)
    return written


def product_stem(path: Path) -> str:
    """``m31.fits.gz`` -> ``m31``: the name of the products written for ``path``."""
    name = path.name
    for compression in (".gz", ".bz2"):
        name = name.removesuffix(compression)
    return Path(name).stem or name


def _copy(source: Path, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return str(target)


def exit_status(results: list[FileResult]) -> int:
    """0: every file solved; 1: some were not; 2: some file could not be read at all."""
    if any(result.status == BAD_INPUT for result in results):
        return 2
    return 0 if all(result.status == SOLVED for result in results) else 1
