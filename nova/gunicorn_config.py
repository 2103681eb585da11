"""Gunicorn's settings for Nova's web server: the one home for `nova up` and the container
image (``gunicorn -c python:nova.gunicorn_config --bind ... nova.wsgi:app``).

gthread workers read each request in one of their threads, so a client that sends its
request a byte at a time (slowloris) holds a thread until it finishes or gives up: with the
former 2 x 4 threads, 16 such connections made every request time out, /healthz too. Each
worker now has 32 threads (cheap: they wait on sockets), so 16 slow connections leave most
of them free. gevent workers would hold a slow client in a greenlet instead, but a sandboxed
decoding child forked from a gevent worker carries copies of the other requests' greenlets
and would run them at its first cooperative wait (nova.sandbox forks per picture), so the
web server stays on threads; Caddy (the https profile) reads requests before passing them on.
"""

from __future__ import annotations

import os

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
