"""Gunicorn's settings for Nova's web server: the one home for `nova up` and the container
image (``gunicorn -c python:nova.gunicorn_config --bind ... nova.wsgi:app``).

gthread workers read each request in one of their threads, so a client that sends its
request a byte at a time (slowloris) holds a thread until it finishes or gives up: with the
former 2 x 4 threads, 16 such connections made every request time out, /healthz too. Each
worker now has 32 threads (cheap: they wait on sockets), so 16 slow connections leave most
of them free. gevent workers would hold a slow client in a greenlet instead, but a sandboxed
decoding child forked from a gevent worker carries copies of the other requests' greenlets
and would run them at its first cooperative wait (nova.engine.sandbox forks per picture), so the
web server stays on threads; Caddy (the https profile) reads requests before passing them on.

With NOVA_METRICS on, the web workers' counts (nova.infra.metrics) go to files in one directory
that every worker's /metrics adds up: PROMETHEUS_MULTIPROC_DIR when the operator sets it
(emptied at start, as prometheus-client requires), else a fresh temporary one per server.
It is set in the master before any worker starts (prometheus-client reads it at import).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from nova.config.readers import parse_flag

worker_class = "gthread"
workers = int(os.environ.get("NOVA_WEB_WORKERS", "2"))
threads = 32
# Connections one worker holds at once (slow or keep-alive ones included).
worker_connections = 1000
# A request that has not finished after this is stopped (its worker restarted).
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = "-"


_own_metrics_dir: str | None = None


def on_starting(server: Any) -> None:
    global _own_metrics_dir
    if not parse_flag(os.environ, "NOVA_METRICS", False):
        return
    if "prometheus_client.values" in sys.modules and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Imported already, it would count in each worker's memory: every scrape would see
        # one worker's counts only.
        raise RuntimeError("prometheus_client was imported before its directory was set")
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):  # counts of an earlier run
            stale.unlink()
    else:
        directory = _own_metrics_dir = tempfile.mkdtemp(prefix="nova-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def child_exit(server: Any, worker: Any) -> None:
    # A worker that stopped (restarted after a timeout, or killed) keeps its counts in the
    # directory; only its live gauges, if any, are dropped.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _own_metrics_dir is not None:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
