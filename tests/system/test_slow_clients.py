"""Slow clients cannot starve the server (issue 16, M1): with 16 connections trickling one
byte a second (headers or body, slowloris), /healthz and the API still answer within 1 s on
a bare `nova up` (gunicorn with nova.gunicorn_config, as the container image runs it);
tests/system/test_compose.py measures the same behind compose."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.support.figures import record_figure
from tests.support.stack import live_stack

SLOW_CONNECTIONS = 16
ANSWER_WITHIN = 1.0  # seconds, the figure


@contextmanager
def slowloris(base: str, connections: int, body: bool) -> Iterator[list[socket.socket]]:
    """Open ``connections`` that send a request one byte a second and never finish it."""
    address = urlsplit(base)
    stop = threading.Event()
    sockets: list[socket.socket] = []
    if body:
        request = (
            b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
            b"urlencoded\r\nContent-Length: 100000\r\n\r\n" + b"request-json=" + b"x" * 5000
        )
        opening = request[: request.index(b"\r\n\r\n") + 4]  # headers at once, body slowly
        rest = request[len(opening) :]
    else:
        opening, rest = b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-a: b\r\n" * 5000
    for _ in range(connections):
        sock = socket.create_connection((address.hostname, address.port), timeout=10)
        sock.sendall(opening)
        sockets.append(sock)

    trickling = threading.Event()  # every connection has had its first slow byte

    def trickle() -> None:
        position = 0
        while not stop.wait(1.0) and position < len(rest):
            for sock in sockets:
                try:
                    sock.send(rest[position : position + 1])
                except OSError:
                    pass
            position += 1
            trickling.set()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        assert trickling.wait(60), "the slow connections never got their first byte"
        yield sockets
    finally:
        stop.set()
        thread.join(timeout=60)
        for sock in sockets:
            sock.close()


def timed_get(url: str, **kwargs: object) -> tuple[float, int]:
    started = time.monotonic()
    try:
        response = requests.get(url, timeout=10, **kwargs)  # type: ignore[arg-type]
        status = response.status_code
    except requests.RequestException:
        status = 0
    return time.monotonic() - started, status


def slowest_answer(base: str, body: bool) -> float:
    """Seconds the slowest of 5 /healthz and 5 API requests took while SLOW_CONNECTIONS
    trickle their headers (or body); every one must have been answered."""
    with slowloris(base, SLOW_CONNECTIONS, body=body):
        answers = [timed_get(base + "/healthz") for _ in range(5)]
        answers += [timed_get(base + "/api/jobs/1") for _ in range(5)]
    assert all(status in (200, 404) for _, status in answers), answers
    return max(seconds for seconds, _ in answers)


def test_slow_clients_do_not_starve_health_checks_or_the_api(
    tmp_path: Path, database_url: str
) -> None:
    with live_stack(tmp_path, NOVA_DATABASE_URL=database_url) as stack:
        for body in (False, True):
            slowest = slowest_answer(stack.base, body)
            record_figure(
                f"slowloris on {database_url.split(':')[0]} ({SLOW_CONNECTIONS} connections "
                f"trickling their {'body' if body else 'headers'}): slowest /healthz or API "
                f"answer {slowest * 1000:.0f} ms"
            )
            assert slowest < ANSWER_WITHIN, slowest
