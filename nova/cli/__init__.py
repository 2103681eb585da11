"""The ``nova`` command: database set-up, users, workers, and the whole stack run bare."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import click
import redis
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from rq import Worker

from nova import create_app
from nova.db.schema import SchemaNotCurrent, check_schema, init_database
from nova.extensions import db
from nova.infra import jobqueue
from nova.services import reconcile, retention
from nova.services.accounts import create_user, reset_api_key
from nova.worker import context as worker_context


@click.group(
    cls=FlaskGroup,
    create_app=create_app,
    add_version_option=False,
    load_dotenv=False,
    set_debug_flag=False,
)
def main() -> None:
    """Nova plate-solving service."""


@main.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create or migrate the database to this release's schema (safe to run again)."""
    done = init_database()
    click.echo(f"database ready: {db.engine.url.render_as_string(hide_password=True)} ({done})")


@main.command("create-user")
@click.argument("email")
@click.option("--admin", is_flag=True, help="Give the user operator rights.")
@with_appcontext
def create_user_command(email: str, admin: bool) -> None:
    """Create a user and print its API key (shown only this once)."""
    try:
        user, key = create_user(email, is_admin=admin)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created user {user.id} <{user.email}>")
    click.echo(f"API key: {key}")


@main.command("reset-api-key")
@click.argument("email")
@with_appcontext
def reset_api_key_command(email: str) -> None:
    """Give a user a new API key (the old one stops working) and print it."""
    try:
        key = reset_api_key(email)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"API key: {key}")


@main.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@with_appcontext
def worker_command(burst: bool) -> None:
    """Run an RQ worker that processes submissions and solves."""
    require_current_schema()
    config = current_app.config
    if config["WORKER_NICE"]:
        # Inherited by every work horse and engine process; only ever lowers priority.
        os.nice(min(config["WORKER_NICE"], 19))
    counts = reconcile.reconcile(config["MAX_ATTEMPTS"], config["HEARTBEAT_SECONDS"])
    if any(counts.values()):
        click.echo(f"picked up work left pending: {counts}")
    # Hold no database connection while RQ forks a work horse per job: a horse would inherit
    # this session's connection, share it with its siblings and, once the database has
    # restarted, fail every job on the dead socket (a fresh one passes the pool's pre-ping).
    db.session.remove()
    db.engine.dispose()
    worker_context.serve_app(current_app._get_current_object())  # type: ignore[attr-defined]
    if not burst:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        threading.Thread(target=_reconcile_forever, args=(app,), daemon=True).start()
    if config["WARM_ENGINE"]:
        from nova.engine import warm_engine

        # Opened here, before RQ forks a work horse per job: every horse shares it.
        engine = warm_engine.preload(config["INDEX_DIRS"])
        if engine is not None:
            click.echo(f"warm engine: {len(engine.index_files)} index files open")
    connection = jobqueue.redis_connection()
    while True:
        # Queues in priority order: submissions, then hinted solves, then blind ones.
        worker = Worker(list(jobqueue.ALL_QUEUES), connection=connection)
        try:
            # The scheduler puts webhook retries (RQ's Retry intervals) back on their queue.
            worker.work(burst=burst, logging_level="INFO", with_scheduler=True)
            return  # burst finished, or asked to stop (SIGTERM, SIGINT)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # RQ quits when redis goes away while a job runs. Nothing is lost: the job's row
            # is in the database and its horse finishes it (or the reconciler retries it).
            # Wait for redis and work on, as a new RQ worker (a restarted redis without
            # persistence has forgotten the old one).
            click.echo(f"redis went away ({exc}); waiting for it to come back", err=True)
            # RQ's signal handlers only set a flag on the worker that quit: stop at once.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            while not _redis_alive(current_app.config["REDIS_URL"]):
                time.sleep(1)
            click.echo("redis is back; working on", err=True)


@main.command("purge")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=None,
    help="Age in days (default: NOVA_RETENTION_DAYS).",
)
@with_appcontext
def purge_command(days: int | None) -> None:
    """Delete anonymous and failed uploads older than DAYS, with their products and files."""
    days = days or current_app.config["RETENTION_DAYS"]
    if not days:
        raise click.ClickException("give --days N, or set NOVA_RETENTION_DAYS")
    removed = retention.purge(days)
    click.echo(
        f"purged uploads older than {days} days: {removed.submissions} submissions, "
        f"{removed.images} images, {removed.jobs} jobs, {removed.files} files and directories"
    )


def require_current_schema() -> None:
    """Refuse to start on a database that `nova init-db` has not migrated."""
    try:
        check_schema()
    except SchemaNotCurrent as exc:
        raise click.ClickException(str(exc)) from None


def _reconcile_forever(app: Flask) -> None:
    """Every NOVA_RECONCILE_SECONDS: retry jobs whose worker died, re-queue lost entries."""
    config = app.config
    last_purge = 0.0
    while True:
        time.sleep(config["RECONCILE_SECONDS"])
        with app.app_context():
            try:
                counts = reconcile.reconcile(config["MAX_ATTEMPTS"], config["HEARTBEAT_SECONDS"])
                if any(counts.values()):
                    app.logger.warning("reconciler: %s", counts)
                # Retention, hourly: every worker may do it; deleting twice is harmless.
                if config["RETENTION_DAYS"] and time.monotonic() - last_purge > 3600:
                    last_purge = time.monotonic()
                    retention.purge(config["RETENTION_DAYS"])
            except Exception:  # redis or the database away: try again next round
                app.logger.exception("reconciler round failed")
            finally:
                db.session.remove()


def _redis_alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False


def _start_redis(url: str, data_dir: Path) -> subprocess.Popen[bytes] | None:
    """Start a local redis-server for ``url`` unless one answers there already."""
    if _redis_alive(url):
        click.echo(f"using the redis already running at {url}")
        return None
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise click.ClickException(f"redis at {url} does not answer, and it is not local")
    binary = shutil.which("redis-server")
    if binary is None:
        raise click.ClickException("redis-server is not installed (run scripts/install-system.sh)")
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(parsed.port or 6379),
            "--dir",
            str(redis_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
        ]
    )
    for _ in range(100):
        if _redis_alive(url):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.terminate()
    raise click.ClickException(f"redis-server did not start on {url}")


@main.command("up")
@click.option(
    "--host",
    default=lambda: os.environ.get("NOVA_BIND", "127.0.0.1"),
    show_default="NOVA_BIND or 127.0.0.1",
)
@click.option(
    "--port",
    type=int,
    default=lambda: int(os.environ.get("NOVA_PORT", "8000")),
    show_default="NOVA_PORT or 8000",
)
@click.option(
    "--workers",
    type=int,
    # One worker per usable CPU: a solve is single-threaded, so every core is busy and no
    # two solves share one.
    # (NOVA_WORKERS=0 still means "web server only".)
    default=lambda: int(os.environ.get("NOVA_WORKERS") or len(os.sched_getaffinity(0))),
    show_default="NOVA_WORKERS or one per CPU",
    help="Number of solver workers (each solve uses one core).",
)
@click.option(
    "--web-workers",
    type=int,
    default=lambda: int(os.environ.get("NOVA_WEB_WORKERS", "2")),
    show_default="NOVA_WEB_WORKERS or 2",
)
@with_appcontext
def up_command(host: str, port: int, workers: int, web_workers: int) -> None:
    """Run the whole stack without Docker: redis (if needed), gunicorn web, RQ workers."""
    init_database()
    config = current_app.config
    processes: list[subprocess.Popen[bytes]] = []
    redis_process = _start_redis(config["REDIS_URL"], Path(config["DATA_DIR"]))
    if redis_process is not None:
        processes.append(redis_process)
    # NOVA_WORKERS: each worker's share of the CPUs (NOVA_ENGINE_PROCESSES' default).
    env = dict(os.environ, NOVA_DATA_DIR=str(config["DATA_DIR"]), NOVA_WORKERS=str(workers))
    processes.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                # Worker class and timeouts: nova/gunicorn_config.py, as in the container.
                "--config",
                "python:nova.gunicorn_config",
                "--bind",
                f"{host}:{port}",
                "--workers",
                str(web_workers),
                "nova.wsgi:app",
            ],
            env=env,
        )
    )
    web = processes[-1]

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "nova", "worker"], env=env)

    worker_processes = [start_worker() for _ in range(workers)]
    click.echo(f"Nova is serving http://{host}:{port}/ (Ctrl-C stops everything)")

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    restarts = 0
    try:
        while not stopping and all(p.poll() is None for p in processes):
            for slot, process in enumerate(worker_processes):
                if process.poll() is not None and not stopping:
                    # A worker that dies (killed, out of memory, a crash) is replaced; its
                    # job's row is in the database and the reconciler retries it.
                    click.echo(
                        f"worker {process.pid} stopped (exit {process.returncode}); "
                        "starting another",
                        err=True,
                    )
                    worker_processes[slot] = start_worker()
                    restarts += 1
            # A worker dying at once again and again (bad settings) is not restarted in a
            # tight loop.
            time.sleep(0.5 if restarts < 10 else 5)
    finally:
        # Workers first (a warm shutdown lets the current solve finish), then the web
        # server, and redis last: the others still talk to it while they stop.
        for group, grace in (
            (worker_processes, 25),
            ([web], 5),
            ([p for p in processes if p is not web], 5),
        ):
            for process in group:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for process in group:
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    failed = [p.args for p in processes if p.returncode not in (0, -signal.SIGTERM, None)]
    if failed and not stopping:
        raise click.ClickException(f"a process stopped unexpectedly: {failed[0]}")


@main.command("indexes")
@click.argument("directories", nargs=-1, type=click.Path(path_type=Path))
@with_appcontext
def indexes_command(directories: tuple[Path, ...]) -> None:
    """List the index files (NOVA_INDEX_DIRS, or DIRECTORIES) and the field widths they cover.

    Exits with status 1 when no index file is found at all.
    """
    from nova.engine import indexes

    dirs = list(directories) or list(current_app.config["INDEX_DIRS"])
    scan = indexes.scan_index_dirs(dirs)
    click.echo("index directories: " + ", ".join(str(d) for d in dirs))
    if scan:
        rows = [("file", "id", "quads (arcmin)", "stars", "size", "sky")]
        rows += [
            (
                str(index.path),
                str(index.index_id),
                f"{index.scale_lower:.1f}-{index.scale_upper:.1f}",
                "" if index.stars is None else f"{index.stars:,}",
                f"{index.size / 1e6:.1f} MB",
                index.sky,
            )
            for index in scan
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        right = {1, 3, 4}
        for row in rows:
            cells = [
                cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            ]
            click.echo("  ".join(cells).rstrip())
        total = sum(index.size for index in scan)
        click.echo(f"{len(scan)} index files, {total / 1e6:.1f} MB")
    if scan.problems:
        click.echo("\nproblems:")
        for problem in scan.problems:
            click.echo(f"  {problem.path}: {problem.message}")
    click.echo("\ncoverage (field width: index ids whose quads are 10-100% of the field):")
    for band in indexes.coverage(scan):
        width = indexes.format_degrees(band.width).rjust(6)
        if band.covered:
            ids = ", ".join(str(i) for i in band.index_ids)
            sky = "" if band.full_sky else " (part of the sky only)"
            click.echo(f"  {width}  covered by {ids}{sky}")
        else:
            click.echo(f"  {width}  NOT covered")
    click.echo("")
    for line in indexes.summary(scan):
        click.echo(line)
    if not scan:
        raise SystemExit(1)


PARITY_CHOICES = {"pos": 0, "neg": 1, "both": 2}


@main.command("solve", with_appcontext=False)  # no app: no database, no redis
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--scale-low", type=float, help="Lower bound of the field size (--scale-units).")
@click.option("--scale-high", type=float, help="Upper bound of the field size (--scale-units).")
@click.option(
    "--scale-units",
    default="degwidth",
    show_default=True,
    help="degwidth, arcminwidth, arcsecperpix or focalmm (nova's names and aliases).",
)
@click.option("--ra", type=float, help="Position hint: field centre RA, degrees.")
@click.option("--dec", type=float, help="Position hint: field centre Dec, degrees.")
@click.option("--radius", type=float, help="Position hint: search radius, degrees.")
@click.option(
    "--parity", type=click.Choice(list(PARITY_CHOICES)), default="both", show_default=True
)
@click.option("--downsample", type=int, help="Downsample factor before extraction [2].")
@click.option(
    "--time-limit",
    type=click.FloatRange(min=1),
    help="Seconds per file [NOVA_SOLVE_TIME_LIMIT, 300].",
)
@click.option(
    "--index-dir",
    "index_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Index directory (repeatable) [NOVA_INDEX_DIRS].",
)
@click.option(
    "--no-header-hints",
    is_flag=True,
    help="Ignore scale/position hints in the file's header (FITS, XISF, EXIF).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, per line.")
@click.option(
    "--wcs", "wcs_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the WCS here."
)
@click.option(
    "--outdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each solved file's products here: NAME.wcs, .corr, .rdls, .axy.",
)
def solve_command(
    files: tuple[Path, ...],
    scale_low: float | None,
    scale_high: float | None,
    scale_units: str,
    ra: float | None,
    dec: float | None,
    radius: float | None,
    parity: str,
    downsample: int | None,
    time_limit: float | None,
    index_dirs: tuple[Path, ...],
    no_header_hints: bool,
    as_json: bool,
    wcs_out: Path | None,
    outdir: Path | None,
) -> None:
    """Solve FILES now, with the workers' engine path: no redis, database or web server.

    Exit status: 0 when every file solved, 1 when some did not, 2 for bad input or usage.
    """
    import json

    from nova.cli import local_solve
    from nova.config import ConfigError, load_config
    from nova.engine.params import ParamError, parse_solve_params

    if wcs_out is not None and len(files) > 1:
        raise click.UsageError("--wcs names one output file: give one FILE, or use --outdir")
    # nova's parameter names, validated by the rules the API applies; a bound not given
    # keeps nova's default (0.1 to 180 degrees wide), as does every option left out.
    hints = {
        "scale_units": scale_units,
        "scale_lower": scale_low,
        "scale_upper": scale_high,
        "center_ra": ra,
        "center_dec": dec,
        "radius": radius,
        "parity": PARITY_CHOICES[parity],
        "downsample_factor": downsample,
        "use_header_hints": not no_header_hints,
    }
    try:
        params = parse_solve_params(hints)
        # The same settings the workers read; nothing is signed, so no secret key is needed.
        config = load_config(
            dict(os.environ, NOVA_SECRET_KEY=os.environ.get("NOVA_SECRET_KEY") or "unused")
        )
    except (ParamError, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    directories = list(index_dirs) or list(config["INDEX_DIRS"])
    missing = [str(d) for d in directories if not d.is_dir()]
    if missing:
        raise click.UsageError(f"no such index directory: {', '.join(missing)}")
    results = []
    for path in files:
        result = local_solve.solve_file(
            path,
            params,
            index_dirs=directories,
            time_limit=time_limit or config["SOLVE_TIME_LIMIT"],
            config=config,
            outdir=outdir,
            wcs_out=wcs_out,
        )
        results.append(result)
        if as_json:
            click.echo(json.dumps(result.as_json()))
        else:
            click.echo(result.summary())
        if result.status == local_solve.BAD_INPUT:
            click.echo(f"nova solve: {path}: {result.reason}", err=True)
    raise SystemExit(local_solve.exit_status(results))
