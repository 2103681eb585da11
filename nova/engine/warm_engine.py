"""Stage 2 without a new process: the astrometry.net solver as a library, kept in the worker.

The PyPI package ``astrometry`` embeds astrometry.net's solver. A ``WarmEngine`` opens every
index file once (in ``nova worker`` before RQ forks its work horses, so the parsed index
headers are shared copy-on-write with every job) and solves ``job.axy`` -- the file that
``solve-field --just-augment`` wrote -- with the parameters written in its header, the same
ones ``astrometry-engine`` reads: scale range, position hint, parity, tweak (SIP) order,
positional error, verification options, odds thresholds, the engine's depth steps (10, 20,
... 200 sources) and index order (largest quads first). It writes the products the rest of
Nova reads: ``wcs.fits`` (with SIP), ``rdls.fits``, ``corr.fits`` and lines in the log.

Each solve runs in a fork of the calling process. The fork stops itself at the deadline (the
library checks signals between steps of its search), and is killed with SIGKILL if it has
not ended shortly after; a crash of the library (segfault, abort) ends only the fork, and
the caller goes on with ``astrometry-engine`` instead (see ``solver.solve``).

What differs from ``astrometry-engine``: the library bails out of verifying a hopeless match
later (log-odds -1000 instead of -230, fixed inside the library), which makes some blind
searches slower but does not change the answer; ``corr.fits`` is derived here by matching
the solution's reference stars to the nearest detected source, so its ``match_weight`` is a
Gaussian of that distance, not the engine's verification weight; ``rdls.fits`` lists the
reference stars the library verified against (the engine's set, give or take a few stars at
the edges). Options the library cannot take (CRPIX set by hand, a zero scale lower bound,
explicit depths or bail/stop odds) make ``supports`` say no, and the engine is used.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import select
import signal
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from nova.engine import process

try:
    import astrometry
except ImportError:  # the subprocess engine is used instead
    astrometry = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_prctl = ctypes.CDLL(None, use_errno=True).prctl

# astrometry-engine's defaults (blind.c, engine.c at 0.93) for what job.axy does not say.
DEFAULT_DEPTHS = tuple(range(10, 201, 10))
DEFAULT_ODDS_TO_SOLVE = 1e9
DEFAULT_ODDS_TO_TUNE_UP = 1e6
DEFAULT_QUAD_SIZE_FRACTION_LOW = 0.1  # of the image's smaller side
DEFAULT_QUAD_SIZE_FRACTION_HIGH = 1.0  # of the image's diagonal
DEFAULT_TWEAK_ORDER = 2
# After the soft stop at the deadline, the fork gets this long to end before SIGKILL.
HARD_KILL_GRACE_SECONDS = 2.0
# corr.fits: a reference star and a detected source correspond when this close (pixels):
# at least 3 sigma of the positional error, and 1 % of the diagonal because distortion
# left after a low-order fit grows towards the corners (the engine's matches reach that).
CORR_SIGMAS = 3.0
CORR_DIAGONAL_FRACTION = 0.01


class WarmEngineCrashed(Exception):
    """The library's process died or failed; the message says how."""


class WarmEngineTimeout(Exception):
    """The deadline passed before the library found a solution."""


def available() -> bool:
    return astrometry is not None


@dataclass(frozen=True)
class AxyJob:
    """What ``job.axy`` asks the engine to do, read from its header and table."""

    width: float
    height: float
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray | None
    background: np.ndarray | None
    scale_low: float | None  # arcsec per pixel
    scale_high: float | None
    position: tuple[float, float, float] | None  # RA, Dec, radius in degrees
    parity: str  # "both", "pos" or "neg"
    tweak: bool
    tweak_order: int
    positional_error: float
    uniformize: bool
    deduplicate: bool
    odds_to_solve: float
    odds_to_tune_up: float
    quad_size_fraction_low: float
    quad_size_fraction_high: float
    unsupported: tuple[str, ...]  # header options the library cannot honour

    @property
    def diagonal(self) -> float:
        return math.hypot(self.width, self.height)

    def slices(self) -> list[tuple[int, int]]:
        """The engine's depth steps: sources 0-10, 10-20, ... 190-200, as far as there are."""
        stars = len(self.x)
        slices: list[tuple[int, int]] = []
        start = 0
        for depth in DEFAULT_DEPTHS:
            end = min(depth, stars)
            if end > start:
                slices.append((start, end))
            start = end
        return slices


def _flag(header: fits.Header, key: str, default: bool) -> bool:
    value = header.get(key)
    return default if value is None else bool(value)


def read_axy(path: Path) -> AxyJob:
    with fits.open(path) as hdus:
        header = hdus[0].header
        data = hdus[1].data
        names = {name.upper(): name for name in data.columns.names}
        x = np.asarray(data[names["X"]], dtype=float)
        y = np.asarray(data[names["Y"]], dtype=float)
        flux = np.asarray(data[names["FLUX"]], dtype=float) if "FLUX" in names else None
        background = (
            np.asarray(data[names["BACKGROUND"]], dtype=float) if "BACKGROUND" in names else None
        )
    unsupported = [
        key
        for key in (
            "ANCRPIXC",
            "ANCRPIX1",
            "ANCRPIX2",
            "ANDPL1",
            "ANDPU1",
            "ANODDSBL",
            "ANODDSST",
            "ANAPPL2",
            "ANXCOL",
            "ANYCOL",
        )
        if key in header
    ]
    scale_low = header.get("ANAPPL1")
    scale_high = header.get("ANAPPU1")
    if scale_low is None or scale_high is None:
        unsupported.append("a scale range without both bounds")
    position = None
    if all(key in header for key in ("ANERA", "ANEDEC", "ANERAD")):
        position = (
            float(header["ANERA"]) % 360.0,
            float(header["ANEDEC"]),
            float(header["ANERAD"]),
        )
    parity = str(header.get("ANPARITY", "")).strip().upper()
    return AxyJob(
        width=float(header["IMAGEW"]),
        height=float(header["IMAGEH"]),
        x=x,
        y=y,
        flux=flux,
        background=background,
        scale_low=None if scale_low is None else float(scale_low),
        scale_high=None if scale_high is None else float(scale_high),
        position=position,
        parity={"POS": "pos", "NEG": "neg"}.get(parity, "both"),
        tweak=_flag(header, "ANTWEAK", False),
        tweak_order=int(header.get("ANTWEAKO", DEFAULT_TWEAK_ORDER)),
        positional_error=float(header.get("ANPOSERR", 1.0)),
        uniformize=_flag(header, "ANVERUNI", True),
        deduplicate=_flag(header, "ANVERDUP", False),
        odds_to_solve=float(header.get("ANODDSSL", DEFAULT_ODDS_TO_SOLVE)),
        odds_to_tune_up=float(header.get("ANODDSTU", DEFAULT_ODDS_TO_TUNE_UP)),
        quad_size_fraction_low=float(header.get("ANQSFMIN", DEFAULT_QUAD_SIZE_FRACTION_LOW)),
        quad_size_fraction_high=float(header.get("ANQSFMAX", DEFAULT_QUAD_SIZE_FRACTION_HIGH)),
        unsupported=tuple(unsupported),
    )


def index_files_in(index_dirs: Sequence[Path]) -> list[Path]:
    """Every index file the engine's ``autoindex`` would use, largest quads first (the
    order in which ``astrometry-engine`` tries them)."""
    from nova.engine.indexes import scan_index_dirs

    scan = scan_index_dirs(index_dirs)
    ordered = sorted(scan, key=lambda index: (-index.scale_upper, str(index.path)))
    return [index.path for index in ordered]


class WarmEngine:
    """Index files opened once; one solve at a time (the library's Solver is not safe to
    share between threads), each in a fork of the caller."""

    def __init__(self, index_dirs: Sequence[Path]) -> None:
        if astrometry is None:
            raise RuntimeError("the astrometry package is not installed")
        self.index_files = index_files_in(index_dirs)
        if not self.index_files:
            raise RuntimeError(f"no index files in {', '.join(map(str, index_dirs))}")
        self.index_dirs = tuple(Path(directory) for directory in index_dirs)
        self.solver = astrometry.Solver(self.index_files)

    def close(self) -> None:
        self.solver.close()

    def supports(self, job: AxyJob) -> str | None:
        """None when the library can solve ``job`` as the engine would; else why not."""
        if job.unsupported:
            return "job.axy asks for " + ", ".join(job.unsupported)
        if not job.slices():
            return "no sources"
        return None

    def parameters(self, job: AxyJob) -> Any:
        slices = job.slices()
        # --no-tweak: the engine keeps the WCS of the matched quad, with no tune-up fit.
        order = job.tweak_order if job.tweak else 0
        return astrometry.SolutionParameters(
            sip_order=order,
            sip_inverse_order=order,
            tune_up_logodds_threshold=math.log(job.odds_to_tune_up) if order else None,
            output_logodds_threshold=math.log(job.odds_to_solve),
            positional_noise_pixels=job.positional_error,
            uniformize_index=job.uniformize,
            deduplicate=job.deduplicate,
            minimum_quad_size_pixels=job.quad_size_fraction_low * min(job.width, job.height),
            maximum_quad_size_pixels=job.quad_size_fraction_high * job.diagonal,
            parity={
                "pos": astrometry.Parity.NORMAL,
                "neg": astrometry.Parity.FLIP,
                "both": astrometry.Parity.BOTH,
            }[job.parity],
            slices_generator=lambda count: slices,
            # Stop at the first match above the odds to solve, as the engine does.
            logodds_callback=lambda logodds: astrometry.Action.STOP,
        )

    def solve(self, axy_path: Path, work_dir: Path, log_path: Path, deadline: float) -> bool:
        """Solve ``axy_path`` and write wcs.fits, rdls.fits and corr.fits in ``work_dir``.

        Returns False when no solution was found. Raises WarmEngineTimeout at the deadline
        and WarmEngineCrashed when the library's process dies or fails.
        """
        job = read_axy(axy_path)
        reason = self.supports(job)
        if reason is not None:
            raise ValueError(reason)
        with log_path.open("a") as log_file:
            log_file.write(
                f"$ warm engine: {len(self.index_files)} index files loaded in the worker; "
                f"solving {axy_path.name} ({len(job.x)} sources)\n"
            )
        started = time.monotonic()
        payload = self._solve_in_fork(job, log_path, deadline)
        if payload.get("timeout"):
            raise WarmEngineTimeout()
        matches = payload["matches"]
        with log_path.open("a") as log_file:
            if not matches:
                log_file.write(
                    f"Field 1 did not solve ({time.monotonic() - started:.2f} s in the warm "
                    "engine).\n"
                )
                return False
            match = matches[0]
            log_file.write(
                f"  log-odds ratio {match['logodds']:g}, {len(match['stars'])} reference "
                f"stars in the field.\n  pixel scale {match['scale_arcsec_per_pixel']:g} "
                f"arcsec/pix.\nField 1: solved with index {Path(match['index_path']).name} "
                f"({time.monotonic() - started:.2f} s in the warm engine).\n"
            )
        write_products(job, match, work_dir, self.index_files)
        return True

    def _solve_in_fork(self, job: AxyJob, log_path: Path, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WarmEngineTimeout()
        process.tracker.check()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the fork: solve, send the answer, never return into the caller
            os.close(read_end)
            _child(self, job, log_path, remaining, write_end)
        os.close(write_end)
        process.tracker.track_pid(pid)  # in the horse's group: a cancel kills it by pid
        chunks: list[bytes] = []
        hard_deadline = deadline + HARD_KILL_GRACE_SECONDS
        try:
            while True:
                left = hard_deadline - time.monotonic()
                if left <= 0:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    raise WarmEngineTimeout()
                ready, _, _ = select.select([read_end], [], [], left)
                if not ready:
                    continue
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        except BaseException:
            # The worker itself is being stopped (RQ timeout, SIGTERM): take the fork along.
            _kill(pid)
            raise
        finally:
            os.close(read_end)
            process.tracker.forget(pid)  # its pipe is closed: it has ended or been killed
        _, status = os.waitpid(pid, 0)
        process.tracker.check()
        if os.WIFSIGNALED(status):
            raise WarmEngineCrashed(
                f"the warm engine's process was killed by signal {os.WTERMSIG(status)} "
                f"({signal.Signals(os.WTERMSIG(status)).name})"
            )
        if os.WEXITSTATUS(status) != 0 or not chunks:
            raise WarmEngineCrashed(
                f"the warm engine failed (exit status {os.WEXITSTATUS(status)}); see the log"
            )
        return json.loads(b"".join(chunks))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class _Deadline(BaseException):
    """Raised by the fork's SIGALRM handler; the library stops at its next signal check."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _Deadline()


def _child(engine: WarmEngine, job: AxyJob, log_path: Path, remaining: float, out: int) -> None:
    """Body of the fork. Only the thread that forked exists here: touch nothing shared
    (database, redis), and leave with os._exit whatever happens."""
    code = 3
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a horse killed with -9 takes this along
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        # The library logs its progress (slices, indexes, matches) through logging.
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001))
        try:
            solution = engine.solver.solve(
                np.stack([job.x, job.y], axis=1).tolist(),
                astrometry.SizeHint(job.scale_low, job.scale_high),
                None if job.position is None else astrometry.PositionHint(*job.position),
                engine.parameters(job),
            )
            payload = solution.to_json().encode()
        except _Deadline:
            payload = json.dumps({"timeout": True}).encode()
        signal.setitimer(signal.ITIMER_REAL, 0)
        view = memoryview(payload)
        while view:
            view = view[os.write(out, view) :]
        code = 0
    except BaseException:
        try:
            with open(log_path, "a") as log_file:
                log_file.write(traceback.format_exc())
        except BaseException:
            pass
    finally:
        os._exit(code)


def _header_from_match(
    job: AxyJob, match: dict[str, Any], index_files: Sequence[Path]
) -> fits.Header:
    """The solution as the engine writes wcs.fits: TAN (+ SIP when the tweak order is 2 or
    more), IMAGEW/IMAGEH, and comments naming the index and the match."""
    fields: dict[str, tuple[Any, str]] = {
        key: (value[0], value[1]) for key, value in match["wcs_fields"].items()
    }
    order = int(fields.get("A_ORDER", (0, ""))[0])
    with_sip = job.tweak and order >= 2
    header = fits.Header()
    header["WCSAXES"] = fields["WCSAXES"]
    projection = "TAN"
    header["CTYPE1"] = (
        f"RA---{projection}{'-SIP' if with_sip else ''}",
        "TAN (gnomic) projection" + (" + SIP distortions" if with_sip else ""),
    )
    header["CTYPE2"] = (
        f"DEC--{projection}{'-SIP' if with_sip else ''}",
        "TAN (gnomic) projection" + (" + SIP distortions" if with_sip else ""),
    )
    for key in (
        "EQUINOX",
        "LONPOLE",
        "LATPOLE",
        "CRVAL1",
        "CRVAL2",
        "CRPIX1",
        "CRPIX2",
        "CUNIT1",
        "CUNIT2",
        "CD1_1",
        "CD1_2",
        "CD2_1",
        "CD2_2",
    ):
        header[key] = fields[key]
    header["IMAGEW"] = (job.width, "Image width,  in pixels.")
    header["IMAGEH"] = (job.height, "Image height, in pixels.")
    if with_sip:
        for prefix in ("A", "B", "AP", "BP"):
            header[f"{prefix}_ORDER"] = fields[f"{prefix}_ORDER"]
            for key, value in fields.items():
                if key.startswith(f"{prefix}_") and key != f"{prefix}_ORDER":
                    header[key] = value
    header.add_history("Created by Nova's warm engine (astrometry.net solver as a library).")
    header.add_comment(f"index: {Path(match['index_path']).name}")
    header.add_comment(f"log odds: {match['logodds']:g}")
    header.add_comment(f"scale: {match['scale_arcsec_per_pixel']:g} arcsec/pix")
    header.add_comment(f"nindex: {len(match['stars'])}")
    header.add_comment(f"nfield: {len(job.x)}")
    header.add_comment(f"index files loaded: {len(index_files)}")
    return header


def write_products(
    job: AxyJob, match: dict[str, Any], work_dir: Path, index_files: Sequence[Path]
) -> None:
    header = _header_from_match(job, match, index_files)
    fits.PrimaryHDU(header=header).writeto(work_dir / "wcs.fits.tmp", overwrite=True)
    stars = match["stars"]
    ra = np.array([star["ra_deg"] for star in stars], dtype=float)
    dec = np.array([star["dec_deg"] for star in stars], dtype=float)
    tag_names = list(stars[0]["metadata"]) if stars else []
    tags = {
        name: np.array([star["metadata"].get(name, np.nan) for star in stars], dtype=float)
        for name in tag_names
    }
    # rdls.fits: the reference stars in the field, tag-along columns first as the engine's.
    rdls_columns = [fits.Column(name=name, format="E", array=tags[name]) for name in tag_names]
    rdls_columns += [
        fits.Column(name="RA", format="D", unit="deg", array=ra),
        fits.Column(name="DEC", format="D", unit="deg", array=dec),
    ]
    rdls = fits.BinTableHDU.from_columns(rdls_columns)
    rdls.header["AN_FILE"] = ("RDLS", "Astrometry.net file type")
    fits.HDUList([fits.PrimaryHDU(), rdls]).writeto(work_dir / "rdls.fits.tmp", overwrite=True)
    # corr.fits: each reference star with the nearest detected source, one to one.
    wcs = WCS(header, relax=True, naxis=2)
    index_x, index_y = wcs.all_world2pix(ra, dec, 1) if len(ra) else (ra, ra)
    field_ra, field_dec = wcs.all_pix2world(job.x, job.y, 1)
    sigma = max(job.positional_error, CORR_DIAGONAL_FRACTION * job.diagonal / CORR_SIGMAS)
    reach = CORR_SIGMAS * sigma
    pairs: list[tuple[float, int, int]] = []
    for star, (sx, sy) in enumerate(zip(index_x, index_y, strict=True)):
        distance = np.hypot(job.x - sx, job.y - sy)
        for source in np.flatnonzero(distance <= reach):
            pairs.append((float(distance[source]), int(source), star))
    pairs.sort()
    taken_sources: set[int] = set()
    taken_stars: set[int] = set()
    chosen: list[tuple[float, int, int]] = []
    for distance, source, star in pairs:
        if source in taken_sources or star in taken_stars:
            continue
        taken_sources.add(source)
        taken_stars.add(star)
        chosen.append((distance, source, star))
    chosen.sort(key=lambda pair: pair[1])  # by field id, as the engine's
    fid = np.array([source for _, source, _ in chosen], dtype=np.int32)
    sid = np.array([star for _, _, star in chosen], dtype=np.int32)
    distances = np.array([distance for distance, _, _ in chosen], dtype=float)
    corr_columns = [
        fits.Column(name="field_x", format="D", unit="pixels", array=job.x[fid]),
        fits.Column(name="field_y", format="D", unit="pixels", array=job.y[fid]),
        fits.Column(name="field_ra", format="D", unit="degrees", array=field_ra[fid]),
        fits.Column(name="field_dec", format="D", unit="degrees", array=field_dec[fid]),
        fits.Column(name="index_x", format="D", unit="pixels", array=np.asarray(index_x)[sid]),
        fits.Column(name="index_y", format="D", unit="pixels", array=np.asarray(index_y)[sid]),
        fits.Column(name="index_ra", format="D", unit="degrees", array=ra[sid]),
        fits.Column(name="index_dec", format="D", unit="degrees", array=dec[sid]),
        fits.Column(name="index_id", format="J", array=sid),
        fits.Column(name="field_id", format="J", array=fid),
        fits.Column(
            name="match_weight",
            format="D",
            array=np.exp(-0.5 * (distances / max(job.positional_error, 1e-9)) ** 2),
        ),
    ]
    corr_columns += [
        fits.Column(name=name, format="E", array=tags[name][sid]) for name in tag_names
    ]
    if job.flux is not None:
        corr_columns.append(fits.Column(name="FLUX", format="E", array=job.flux[fid]))
    if job.background is not None:
        corr_columns.append(fits.Column(name="BACKGROUND", format="E", array=job.background[fid]))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(corr_columns)]).writeto(
        work_dir / "corr.fits.tmp", overwrite=True
    )
    _write_match(job, match, len(chosen), work_dir / "match.fits.tmp")
    # wcs.fits last: its presence means "solved" to solver.solve and the products.
    for name in ("rdls.fits", "corr.fits", "match.fits", "wcs.fits"):
        os.replace(work_dir / f"{name}.tmp", work_dir / name)


def _write_match(job: AxyJob, match: dict[str, Any], matched: int, path: Path) -> None:
    """match.fits as the engine's, with the columns nova.engine.quality reads: the library says
    the log-odds, the index and its stars in the field; the pairs of corr.fits are the
    matched stars."""
    index_id = int(fits.getheader(match["index_path"]).get("INDEXID", -1))
    columns = [
        fits.Column(name="LOGODDS", format="E", array=[match["logodds"]]),
        fits.Column(name="NMATCH", format="J", array=[matched]),
        fits.Column(name="NFIELD", format="J", array=[len(job.x)]),
        fits.Column(name="NINDEX", format="J", array=[len(match["stars"])]),
        fits.Column(name="INDEXID", format="J", array=[index_id]),
    ]
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns)])
    hdus[1].header["AN_FILE"] = ("MATCH", "Astrometry.net file type")
    hdus.writeto(path, overwrite=True)


_loaded: WarmEngine | None = None
_load_failed: str | None = None


def preload(index_dirs: Sequence[Path]) -> WarmEngine | None:
    """Open the index files once in this process (the worker, before RQ forks horses)."""
    global _loaded, _load_failed
    if _loaded is not None and _loaded.index_dirs == tuple(Path(d) for d in index_dirs):
        return _loaded
    if astrometry is None:
        _load_failed = "the astrometry package is not installed"
        return None
    try:
        _loaded = WarmEngine(index_dirs)
    except (RuntimeError, OSError, TypeError) as exc:  # the library reports bad files as TypeError
        _load_failed = str(exc)
        log.warning("warm engine unavailable, using astrometry-engine: %s", exc)
        return None
    _load_failed = None
    return _loaded


def loaded(index_dirs: Sequence[Path]) -> WarmEngine | None:
    """The engine for these index directories: preloaded, or opened now (then only this
    process keeps it, e.g. a burst worker's horse or the benchmark)."""
    return preload(index_dirs)
