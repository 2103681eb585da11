"""Gunicorn's settings for Nova's web server: the one home for `nova up` and the container
image (``gunicorn -c python:nova.gunicorn_config --bind ... nova.wsgi:app``).

Workers are gevent's: every connection is a greenlet, so a client that sends its request a
byte at a time (slowloris) holds only its own greenlet, never one of a few threads; with
gthread's 2 x 4 threads, 16 such connections made every request time out, /healthz too.
Nothing in a request computes for long: uploads are only sniffed, and pictures are drawn in
a sandboxed child process (nova.sandbox) whose pipe the worker waits on cooperatively.
"""

from __future__ import annotations

import os

worker_class = "gevent"
workers = int(os.environ.get("NOVA_WEB_WORKERS", "2"))
# Connections one worker holds at once (slow or keep-alive ones included).
worker_connections = 1000
# A request that has not finished after this is stopped (its worker restarted).
timeout = 120
graceful_timeout = 30
keepalive = 5
accesslog = "-"
