"""Downloads for URL uploads that cannot be turned against the server (SSRF).

* Only http:// and https:// URLs.
* The host is resolved once with getaddrinfo and EVERY address must be public: loopback,
  private (10/8, 172.16/12, 192.168/16, fc00::/7, 100.64/10), link-local (169.254/16 with
  the 169.254.169.254 cloud metadata address, fe80::/10), multicast, unspecified and
  reserved addresses are refused, also when wrapped in IPv6 (::ffff:a.b.c.d, 6to4, NAT64).
* The connection goes to the address that was checked (no second lookup that a rebinding
  DNS server could answer differently); the Host header and, for https, SNI and certificate
  verification use the name from the URL.
* Redirects are followed by hand, at most MAX_REDIRECTS, and every hop is checked again.
* The body is limited in size and the whole download in time (a watchdog shuts the socket
  at the deadline, so a server sending one byte a second cannot hold a worker).
* No proxy from the environment is used, and no Content-Encoding is decoded.

``allow_private`` (NOVA_URL_ALLOW_PRIVATE) admits loopback and private addresses, for tests
and intranet servers; link-local, multicast, unspecified and reserved stay refused.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urljoin

from nova.infra.download_targets import (
    Check,
    DownloadError,
    DownloadTimeout,
    DownloadTooLarge,
    Resolver,
    Target,
    parse_url,
    resolve,
)

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "nova-solver"
# -- the connection -------------------------------------------------------------------------


class _Watchdog:
    """Shuts the current socket down at the deadline, waking up any blocked read."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:
                # socket.socket's own method: SSLSocket.shutdown would drop its state under
                # the feet of the reading thread.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shutdown()

    def cancel(self) -> None:
        self._timer.cancel()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a checked IP address (``host``); the watchdog sees the socket."""

    def __init__(self, ip: str, port: int, timeout: float, watchdog: _Watchdog) -> None:
        super().__init__(ip, port, timeout=timeout)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()
        self._watchdog.watch(self.sock)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to a checked IP address, with SNI and certificate checks for the URL's host name."""

    def __init__(
        self,
        ip: str,
        port: int,
        timeout: float,
        watchdog: _Watchdog,
        server_hostname: str,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(ip, port, timeout=timeout, context=context)
        self._watchdog = watchdog
        self._server_hostname = server_hostname
        self._tls_context = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self._watchdog.watch(self.sock)
        tls = self._tls_context.wrap_socket(
            self.sock, server_hostname=self._server_hostname, do_handshake_on_connect=False
        )
        self.sock = tls
        self._watchdog.watch(tls)
        tls.do_handshake()


def _tls_context() -> ssl.SSLContext:
    try:
        import certifi  # the CA bundle requests uses, where installed

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


class Body:
    """The response body as a stream for Storage.store_stream, limited in size and time."""

    def __init__(
        self,
        url: str,
        response: http.client.HTTPResponse,
        watchdog: _Watchdog,
        deadline: float,
        timeout: float,
        max_bytes: int,
    ) -> None:
        self.url = url  # the final URL, after redirects
        self._response = response
        self._watchdog = watchdog
        self._deadline = deadline
        self._timeout = timeout
        self._max_bytes = max_bytes
        self.size = 0

    def _timed_out(self) -> DownloadTimeout:
        return DownloadTimeout(f"the download took longer than {self._timeout:g} s")

    def read(self, size: int = -1) -> bytes:
        if time.monotonic() > self._deadline or self._watchdog.expired:
            raise self._timed_out()
        try:
            data = self._response.read1(size if size > 0 else 1 << 16)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if self._watchdog.expired:
                raise self._timed_out() from None
            raise DownloadError(f"the connection failed while reading: {exc}") from None
        if self._watchdog.expired:
            raise self._timed_out()
        if not data and self._response.length:  # Content-Length promised more
            raise DownloadError("the connection closed before the whole file arrived")
        self.size += len(data)
        if self.size > self._max_bytes:
            raise DownloadTooLarge(f"the file is larger than {_mb(self._max_bytes)}")
        return data


def _mb(size: int) -> str:
    return f"{size / (1 << 20):g} MB"


def _request(
    target: Target,
    addresses: list[str],
    remaining: float,
    watchdog: _Watchdog,
    tls_context: ssl.SSLContext | None,
    *,
    method: str = "GET",
    body: bytes | None = None,
    extra_headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send ``method`` (GET, or POST of ``body``) to ``target`` at the first of
    ``addresses`` that accepts a connection."""
    headers = {
        "Host": target.host_header,
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        "Accept-Encoding": "identity",
        "Connection": "close",
        **(extra_headers or {}),
    }
    last_error: Exception | None = None
    for address in addresses:
        connection: http.client.HTTPConnection
        if target.scheme == "https":
            connection = _PinnedHTTPSConnection(
                address,
                target.port,
                remaining,
                watchdog,
                target.host,
                tls_context or _tls_context(),
            )
        else:
            connection = _PinnedHTTPConnection(address, target.port, remaining, watchdog)
        try:
            connection.connect()
        except (OSError, ssl.SSLError) as exc:
            connection.close()
            if watchdog.expired:
                raise
            last_error = exc
            continue
        try:
            connection.request(method, target.path, body=body, headers=headers)
            return connection, connection.getresponse()
        except BaseException:
            connection.close()
            raise
    raise DownloadError(f"could not connect to {target.host}: {last_error}")


def _get_hop(
    target: Target,
    addresses: list[str],
    remaining: float,
    watchdog: _Watchdog,
    tls_context: ssl.SSLContext | None,
    timeout: float,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """One hop's GET, its failures told as DownloadError (DownloadTimeout past the deadline)."""
    with _request_failures(target, watchdog, f"the download took longer than {timeout:g} s"):
        return _request(target, addresses, remaining, watchdog, tls_context)


@contextmanager
def _request_failures(target: Target, watchdog: _Watchdog, timeout_message: str) -> Iterator[None]:
    """Tell a request's failures as DownloadError, or as DownloadTimeout with
    ``timeout_message`` when the watchdog fired or the socket timed out."""
    try:
        yield
    except DownloadError:
        raise
    except (OSError, ssl.SSLError, http.client.HTTPException, ValueError) as exc:
        if watchdog.expired or isinstance(exc, TimeoutError):
            raise DownloadTimeout(timeout_message) from None
        raise DownloadError(f"the request to {target.host} failed: {exc}") from None


def _check_answer(response: http.client.HTTPResponse, max_bytes: int) -> None:
    """Refuse a final answer that is not a 200 or announces more than ``max_bytes``."""
    if response.status != 200:
        raise DownloadError(f"the server answered {response.status} {response.reason}")
    length = response.getheader("Content-Length")
    if length and length.strip().isdigit() and int(length) > max_bytes:
        raise DownloadTooLarge(f"the file is larger than {_mb(max_bytes)}")


@contextmanager
def open_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool = False,
    check: Check | None = None,
    resolver: Resolver = socket.getaddrinfo,
    tls_context: ssl.SSLContext | None = None,
) -> Iterator[Body]:
    """GET ``url`` safely (see the module doc) and yield its body as a stream.

    Every hop's addresses pass ``check`` (see ``resolve``); https certificates are verified
    against ``tls_context`` (default: the certifi or system CAs). Raises DownloadError
    (UnsafeURL, DownloadTooLarge, DownloadTimeout) with a reason.
    """
    deadline = time.monotonic() + timeout
    watchdog = _Watchdog(timeout)
    connection: http.client.HTTPConnection | None = None
    current = url
    try:
        for hop in range(MAX_REDIRECTS + 1):
            target = parse_url(current)
            addresses = resolve(
                target.host,
                target.port,
                allow_private=allow_private,
                check=check,
                resolver=resolver,
            )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DownloadTimeout(f"the download took longer than {timeout:g} s")
            connection, response = _get_hop(
                target, addresses, remaining, watchdog, tls_context, timeout
            )
            if response.status in REDIRECT_STATUSES:
                location = response.getheader("Location")
                connection.close()
                connection = None
                if not location:
                    raise DownloadError(f"the server answered {response.status} with no Location")
                if hop == MAX_REDIRECTS:
                    break
                current = urljoin(current, location.strip())
                continue
            _check_answer(response, max_bytes)
            yield Body(current, response, watchdog, deadline, timeout, max_bytes)
            return
        raise DownloadError(f"the server redirected more than {MAX_REDIRECTS} times")
    finally:
        watchdog.cancel()
        if connection is not None:
            connection.close()


def post(
    url: str,
    body: bytes,
    *,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool = False,
    resolver: Resolver = socket.getaddrinfo,
    tls_context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``url`` under the download rules (addresses checked and pinned, a
    total time limit; redirects are not followed) and return the HTTP status. Raises
    DownloadError (UnsafeURL, DownloadTimeout) when no answer came."""
    watchdog = _Watchdog(timeout)
    connection: http.client.HTTPConnection | None = None
    try:
        target = parse_url(url)
        addresses = resolve(
            target.host, target.port, allow_private=allow_private, resolver=resolver
        )
        with _request_failures(target, watchdog, f"no answer within {timeout:g} s"):
            connection, response = _request(
                target,
                addresses,
                timeout,
                watchdog,
                tls_context,
                method="POST",
                body=body,
                extra_headers=headers,
            )
            response.read(64 * 1024)  # a little of the answer; the status is what counts
        return int(response.status)
    finally:
        watchdog.cancel()
        if connection is not None:
            connection.close()
