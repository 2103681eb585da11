"""Where a download may go: the URL's parts, and the addresses its host resolves to checked
against the policy of nova.infra.download (every address public unless ``allow_private``).
The download errors live here too, since checking a URL is where most of them arise.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote, urlsplit

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
