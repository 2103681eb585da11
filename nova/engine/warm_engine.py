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

import json
import logging
import math
import os
import select
import signal
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nova.engine import process
from nova.engine.axy import AxyJob, read_axy
from nova.engine.warm_products import write_products

try:
    import astrometry
except ImportError:  # the subprocess engine is used instead
    astrometry = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# After the soft stop at the deadline, the fork gets this long to end before SIGKILL.
HARD_KILL_GRACE_SECONDS = 2.0


class WarmEngineCrashed(Exception):
    """The library's process died or failed; the message says how."""


class WarmEngineTimeout(Exception):
    """The deadline passed before the library found a solution."""


def available() -> bool:
    return astrometry is not None


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
        process.die_with_parent()  # a horse killed with -9 takes this along
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
