"""``nova up``: the whole stack without Docker: redis (if needed), gunicorn web, RQ workers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import click
from flask.cli import with_appcontext

from nova.db.schema import init_database
from nova.extensions import settings
from nova.infra.redis_health import redis_alive

Process = subprocess.Popen[bytes]


def _int_option_from_env(
    flag: str, variable: str, fallback: int
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A whole-number option whose default is ``variable``, read when the command runs."""
    return click.option(
        flag,
        type=int,
        default=lambda: int(os.environ.get(variable, str(fallback))),
        show_default=f"{variable} or {fallback}",
    )


@click.command("up")
@click.option(
    "--host",
    default=lambda: os.environ.get("NOVA_BIND", "127.0.0.1"),
    show_default="NOVA_BIND or 127.0.0.1",
)
@_int_option_from_env("--port", "NOVA_PORT", 8000)
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
@_int_option_from_env("--web-workers", "NOVA_WEB_WORKERS", 2)
@with_appcontext
def up_command(host: str, port: int, workers: int, web_workers: int) -> None:
    """Run the whole stack without Docker: redis (if needed), gunicorn web, RQ workers."""
    init_database()
    config = settings()
    processes: list[Process] = []
    redis_process = _start_redis(config.redis_url, Path(config.data_dir))
    if redis_process is not None:
        processes.append(redis_process)
    # NOVA_WORKERS: each worker's share of the CPUs (NOVA_ENGINE_PROCESSES' default).
    env = dict(os.environ, NOVA_DATA_DIR=str(config.data_dir), NOVA_WORKERS=str(workers))
    web = _start_web(host, port, web_workers, env)
    processes.append(web)

    def start_worker() -> Process:
        return subprocess.Popen([sys.executable, "-m", "nova", "worker"], env=env)

    worker_processes = [start_worker() for _ in range(workers)]
    click.echo(f"Nova is serving http://{host}:{port}/ (Ctrl-C stops everything)")

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        _supervise(processes, worker_processes, start_worker, lambda: stopping)
    finally:
        # Workers first (a warm shutdown lets the current solve finish), then the web
        # server, and redis last: the others still talk to it while they stop.
        _stop(worker_processes, grace=25)
        _stop([web], grace=5)
        _stop([p for p in processes if p is not web], grace=5)
    failed = [p.args for p in processes if p.returncode not in (0, -signal.SIGTERM, None)]
    if failed and not stopping:
        raise click.ClickException(f"a process stopped unexpectedly: {failed[0]}")


def _start_web(host: str, port: int, web_workers: int, env: dict[str, str]) -> Process:
    return subprocess.Popen(
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


def _supervise(
    processes: list[Process],
    worker_processes: list[Process],
    start_worker: Callable[[], Process],
    stopping: Callable[[], bool],
) -> None:
    """Replace workers that die until asked to stop or until redis or the web server ends."""
    restarts = 0
    while not stopping() and all(p.poll() is None for p in processes):
        for slot, process in enumerate(worker_processes):
            if process.poll() is not None and not stopping():
                # A worker that dies (killed, out of memory, a crash) is replaced; its
                # job's row is in the database and the reconciler retries it.
                click.echo(
                    f"worker {process.pid} stopped (exit {process.returncode}); starting another",
                    err=True,
                )
                worker_processes[slot] = start_worker()
                restarts += 1
        # A worker dying at once again and again (bad settings) is not restarted in a
        # tight loop.
        time.sleep(0.5 if restarts < 10 else 5)


def _stop(group: list[Process], grace: float) -> None:
    """SIGTERM every process of ``group``, then kill those still running after ``grace`` s."""
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


def _start_redis(url: str, data_dir: Path) -> Process | None:
    """Start a local redis-server for ``url`` unless one answers there already."""
    if redis_alive(url):
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
        if redis_alive(url):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.terminate()
    raise click.ClickException(f"redis-server did not start on {url}")
