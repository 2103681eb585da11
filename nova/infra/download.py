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
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "nova-solver"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list[tuple[Any, ...]]]
Check = Callable[[str], str | None]


class DownloadError(Exception):
    """The download failed; the message (lower case, no URL) says why."""


class UnsafeURL(DownloadError):
    """The URL, or an address its host resolves to, is refused by policy."""


class DownloadTooLarge(DownloadError):
    pass


class DownloadTimeout(DownloadError):
    pass


# -- addresses ------------------------------------------------------------------------------


def address_category(address: str | Address) -> str | None:
    """What kind of non-public address this is ("loopback", "private", ...); None if public."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_category(embedded)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-public"  # e.g. 100.64.0.0/10 (carrier-grade NAT)
    return None


# With NOVA_URL_ALLOW_PRIVATE: still never these.
ALWAYS_REFUSED = frozenset({"unspecified", "link-local", "multicast", "reserved"})


def address_problem(address: str | Address, *, allow_private: bool = False) -> str | None:
    """None when a download may connect to ``address``, else the reason it may not."""
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return f"{address} is not an IP address"
    category = address_category(ip)
    if category is None or (allow_private and category not in ALWAYS_REFUSED):
        return None
    article = "an" if category[0] in "aeiou" else "a"
    return f"{ip} is {article} {category} address"


def _ip_text(address: str) -> str:
    return address.split("%", 1)[0]  # an IPv6 scope (fe80::1%eth0) is not part of the address


def resolve(
    host: str,
    port: int,
    *,
    allow_private: bool = False,
    check: Check | None = None,
    resolver: Resolver = socket.getaddrinfo,
) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing it if ANY of them is refused.

    ``check`` (default: address_problem with ``allow_private``) says why an address is
    refused, or None.
    """
    if check is None:
        check = partial(address_problem, allow_private=allow_private)
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadError(f"the host {host} could not be resolved ({exc})") from None
    addresses: list[str] = []
    for info in infos:
        address = _ip_text(str(info[4][0]))
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DownloadError(f"the host {host} has no address")
    for address in addresses:
        problem = check(address)
        if problem is not None:
            where = "" if host == address else f"{host}: "
            raise UnsafeURL(f"{where}{problem}; Nova downloads only from public addresses")
    return addresses


# -- URLs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    path: str  # path and query, quoted, as sent in the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Split an http(s) URL into what the request needs; raise UnsafeURL or DownloadError."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise DownloadError(f"the URL is not valid ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL("only http:// and https:// URLs can be downloaded")
    host = parts.hostname or ""
    if not host:
        raise DownloadError("the URL names no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise DownloadError(f"the host name {host!r} is not valid") from None
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path)


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
            try:
                connection, response = _request(target, addresses, remaining, watchdog, tls_context)
            except DownloadError:
                raise
            except (OSError, ssl.SSLError, http.client.HTTPException, ValueError) as exc:
                if watchdog.expired or isinstance(exc, TimeoutError):
                    raise DownloadTimeout(f"the download took longer than {timeout:g} s") from None
                raise DownloadError(f"the request to {target.host} failed: {exc}") from None
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
            if response.status != 200:
                raise DownloadError(f"the server answered {response.status} {response.reason}")
            length = response.getheader("Content-Length")
            if length and length.strip().isdigit() and int(length) > max_bytes:
                raise DownloadTooLarge(f"the file is larger than {_mb(max_bytes)}")
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
        try:
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
        except DownloadError:
            raise
        except (OSError, ssl.SSLError, http.client.HTTPException, ValueError) as exc:
            if watchdog.expired or isinstance(exc, TimeoutError):
                raise DownloadTimeout(f"no answer within {timeout:g} s") from None
            raise DownloadError(f"the request to {target.host} failed: {exc}") from None
        return int(response.status)
    finally:
        watchdog.cancel()
        if connection is not None:
            connection.close()
