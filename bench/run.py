"""Benchmark Nova end to end against bare ``solve-field`` on this machine.

Run from the repository root::

    .venv/bin/python bench/run.py            # full mode, about 12-15 minutes
    .venv/bin/python bench/run.py --quick    # smoke check, about 2-3 minutes

See bench/README.md for what is measured and how. Every process this script starts (the
``nova up`` stacks, their redis/gunicorn/workers and every engine process, bare
``solve-field`` runs) is killed on exit, on errors and on Ctrl-C: the script makes itself
a child subreaper, so even processes that left their parent's session are found again.
"""

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]  # nova_bench, and tests.support and nova

# The names the other bench scripts (batch, events, header_hints, polls, race) use as run.X.
from nova_bench.bare import bare_command, run_bare, scale_bounds  # noqa: E402
from nova_bench.client import NovaClient, nova_options  # noqa: E402
from nova_bench.common import (  # noqa: E402
    APOD,
    BARE_TIMEOUT,
    INDEX_DIR,
    JOB_TIMEOUT,
    REPO,
    WIDTHS,
    log,
)
from nova_bench.load import hammer, hammer_threads  # noqa: E402
from nova_bench.measure import measure  # noqa: E402
from nova_bench.memory import MemorySampler  # noqa: E402
from nova_bench.processes import (  # noqa: E402
    become_subreaper,
    descendants,
    kill_everything_we_started,
)
from nova_bench.render import render  # noqa: E402
from nova_bench.report import raw_json  # noqa: E402
from nova_bench.results import Settings, machine_info, software_info  # noqa: E402
from nova_bench.stack import Stack  # noqa: E402
from nova_bench.warm import measure_warm_only, warm_inputs  # noqa: E402

__all__ = [
    "APOD",
    "BARE_TIMEOUT",
    "INDEX_DIR",
    "JOB_TIMEOUT",
    "REPO",
    "WIDTHS",
    "MemorySampler",
    "NovaClient",
    "Settings",
    "Stack",
    "bare_command",
    "become_subreaper",
    "descendants",
    "hammer",
    "hammer_threads",
    "kill_everything_we_started",
    "log",
    "machine_info",
    "main",
    "measure",
    "nova_options",
    "run_bare",
    "scale_bounds",
    "software_info",
    "warm_inputs",
]

# -- main -----------------------------------------------------------------------------------


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so the clean-up below runs for both.

    SIGINT gets Python's handler even when it was inherited as ignored (a shell's
    background job), so ``kill -INT`` always works.
    """

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    yield


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="apod2 and apod4, 1 run each")
    parser.add_argument(
        "--out",
        type=Path,
        help="markdown report (default bench/RESULTS.md, or bench/RESULTS-quick.md with "
        "--quick); the raw figures go next to it as .json",
    )
    parser.add_argument("--clients", type=int, default=8, help="status-poll clients (8)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--warm-only",
        action="store_true",
        help="only bare solve-field vs the warm engine in-process (section 1b), no stacks",
    )
    parser.add_argument(
        "--warm-engine",
        action="store_true",
        help="warm path stage 2 by the PyPI library (NOVA_WARM_ENGINE), not astrometry-engine",
    )
    parser.add_argument(
        "--photos", help="comma-separated photos to time, e.g. apod2,apod4 (default: all)"
    )
    parser.add_argument(
        "--skip-naive-apod5",
        action="store_true",
        help="do not time the failing --downsample 2 blind apod5 run (about 2.5 min)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (APOD / "apod4.jpg").is_file():
        print(f"sample photos missing: {APOD} (set NOVA_TEST_DATA)", file=sys.stderr)
        return 2
    for tool in ("solve-field", "astrometry-engine", "redis-server"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (scripts/install-system.sh)", file=sys.stderr)
            return 2
    settings = Settings(
        quick=args.quick,
        photos=["apod2", "apod4"] if args.quick else [f"apod{i}" for i in range(1, 6)],
        repeats=1 if args.quick else 3,
        clients=args.clients,
        hammer_seconds=5.0 if args.quick else 10.0,
        # Jobs take ~0.5 s now: 30 per batch keeps the first and last second from dominating.
        throughput_jobs=6 if args.quick else 30,
        naive_downsample_attempt=not args.skip_naive_apod5,
        warm_only=args.warm_only,
        warm_engine=args.warm_engine,
    )
    if args.photos:
        settings.photos = args.photos.split(",")
    out = args.out or (REPO / "bench" / ("RESULTS-quick.md" if args.quick else "RESULTS.md"))
    become_subreaper()
    work_root = Path(tempfile.mkdtemp(prefix="nova-bench-"))
    sampler = MemorySampler()
    sampler.start()
    log(f"Nova benchmark ({'quick' if args.quick else 'full'}); scratch in {work_root}")
    try:
        with interruptible():
            measure_run = measure_warm_only if settings.warm_only else measure
            results = measure_run(settings, work_root, sampler)
    except KeyboardInterrupt:
        log("interrupted; stopping everything that was started")
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not stop the clean-up half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sampler.stop()
        kill_everything_we_started()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if args.keep:
            log(f"kept {work_root}")
        else:
            shutil.rmtree(work_root, ignore_errors=True)
    report = render(results, sampler)
    print()
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    out.with_suffix(".json").write_text(
        json.dumps(raw_json(results, sampler), indent=1, default=str) + "\n"
    )
    log(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
