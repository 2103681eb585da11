"""URL uploads cannot be turned against the server: schemes, addresses, redirects, limits.

Only loopback servers are ever connected to; other addresses are only checked. Loopback
downloads need NOVA_URL_ALLOW_PRIVATE (or a test's own address check).
"""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from nova.db.models import Job, Submission
from nova.engine.params import SolveParams
from nova.extensions import db
from nova.infra.download import MAX_REDIRECTS, open_url
from nova.infra.download_targets import (
    DownloadError,
    DownloadTimeout,
    DownloadTooLarge,
    UnsafeURL,
    address_problem,
    parse_url,
    resolve,
)
from nova.services import intake, submissions
from tests.support.processes import run_worker
from tests.support.settings import change_settings

MB = 1 << 20

REFUSED = {
    "127.0.0.1": "loopback",
    "127.1.2.3": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",  # the cloud metadata service
    "::1": "loopback",
    "fe80::1": "link-local",
    "fd00::1": "private",
    "fc00::1": "private",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "100.64.0.1": "non-public",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:169.254.169.254": "link-local",
    "2002:a00:1::": "private",  # 6to4 around 10.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 around 169.254.169.254
}
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946", "2001:4860:4860::8888"]


@pytest.mark.parametrize("address", sorted(REFUSED))
def test_non_public_addresses_are_refused(address: str) -> None:
    problem = address_problem(address)
    assert problem is not None and REFUSED[address] in problem, problem
    # getaddrinfo on a literal answers without any network traffic.
    with pytest.raises(UnsafeURL, match="Nova downloads only from public addresses"):
        resolve(address, 80)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_accepted_without_connecting(address: str) -> None:
    assert address_problem(address) is None
    assert resolve(address, 443) == [address]  # only checked: nothing connects to it


def test_other_spellings_of_loopback_resolve_and_are_refused() -> None:
    for host in ("localhost", "2130706433", "0x7f000001", "127.1"):
        with pytest.raises(UnsafeURL, match="loopback"):
            resolve(host, 80)


def test_every_resolved_address_must_be_public() -> None:
    """A name with one public and one private address is refused (a resolver stands in for
    DNS here: a real one cannot be made to answer so on this machine)."""

    def resolver(*addresses: str) -> Callable[..., list[tuple[object, ...]]]:
        def answer(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port),
                )
                for a in addresses
            ]

        return answer

    mixed = resolver("93.184.216.34", "10.0.0.7")
    with pytest.raises(UnsafeURL, match=r"^images\.example\.org: 10\.0\.0\.7 is a private address"):
        resolve("images.example.org", 80, resolver=mixed)
    mixed6 = resolver("2606:2800:220:1:248:1893:25c8:1946", "fe80::1%eth0")
    with pytest.raises(UnsafeURL, match="link-local"):
        resolve("images.example.org", 80, resolver=mixed6)
    both_public = resolver("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    assert resolve("images.example.org", 80, resolver=both_public) == [
        "93.184.216.34",
        "2606:2800:220:1:248:1893:25c8:1946",
    ]


def test_allow_private_admits_loopback_and_private_but_never_metadata_or_multicast() -> None:
    for address in ("127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "fd00::1"):
        assert address_problem(address, allow_private=True) is None, address
    for address in ("169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1", "240.0.0.1"):
        assert address_problem(address, allow_private=True) is not None, address


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/a.jpg",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_x",
        "dict://127.0.0.1:11211/stat",
        "javascript:alert(1)",
        "//127.0.0.1/a.jpg",
    ],
)
def test_non_http_schemes_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURL, match=r"only http:// and https://"):
        parse_url(url)
    with pytest.raises(UnsafeURL):
        with open_url(url, max_bytes=MB, timeout=5, allow_private=True):
            pass


def test_urls_are_split_for_a_pinned_connection() -> None:
    target = parse_url("HTTPS://Bücher.example/a b.jpg?x=1 2#frag")
    assert (target.scheme, target.host, target.port) == ("https", "xn--bcher-kva.example", 443)
    assert target.path == "/a%20b.jpg?x=1%202"
    assert target.host_header == "xn--bcher-kva.example"
    assert parse_url("http://[::1]:8080/").host_header == "[::1]:8080"
    with pytest.raises(DownloadError, match="not valid"):
        parse_url("http://127.0.0.1:99999/")


# -- a loopback server -----------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    photo: bytes
    hits: list[str]
    stop: threading.Event


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, body: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        path = self.path
        try:
            if path == "/sky/apod4.jpg":
                self._send(self.server.photo, len(self.server.photo))
            elif path.startswith("/hop/"):
                left = int(path.rsplit("/", 1)[1])
                self._redirect(f"/hop/{left - 1}" if left > 1 else "/sky/apod4.jpg")
            elif path == "/loop":
                self._redirect("/loop")
            elif path.startswith("/to/"):
                self._redirect(path[len("/to/") :])  # e.g. /to/http://127.0.0.2:80/x
            elif path == "/big":
                self._send(b"\0" * (2 * MB), 2 * MB)
            elif path == "/big-unannounced":  # no Content-Length: read until the close
                self.close_connection = True
                self._send(b"")
                for _ in range(64):
                    self.wfile.write(b"\0" * (64 * 1024))
            elif path == "/short":
                self.close_connection = True
                self._send(b"x" * 10, 1000)
            elif path == "/slow":  # a valid length, then one small piece every 0.1 s
                self._send(b"", MB // 2)
                while not self.server.stop.wait(0.1):
                    self.wfile.write(b"\xff" * 100)
                    self.wfile.flush()
            elif path == "/silent":  # accepts, then never answers
                self.server.stop.wait(60)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def server(apod: Path) -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.photo = (apod / "apod4.jpg").read_bytes()
    httpd.hits = []
    httpd.stop = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.stop.set()
    httpd.shutdown()
    httpd.server_close()


def base(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def fetch(url: str, **options: object) -> tuple[bytes, str]:
    arguments: dict[str, object] = {"max_bytes": 4 * MB, "timeout": 10, "allow_private": True}
    arguments.update(options)
    with open_url(url, **arguments) as body:  # type: ignore[arg-type]
        data = b"".join(iter(lambda: body.read(1 << 16), b""))
        return data, body.url


def test_loopback_is_refused_by_default_before_any_request(server: _Server) -> None:
    with pytest.raises(UnsafeURL, match="127.0.0.1 is a loopback address"):
        fetch(f"{base(server)}/sky/apod4.jpg", allow_private=False)
    assert server.hits == []


def test_redirects_are_followed_up_to_five_hops(server: _Server) -> None:
    data, final = fetch(f"{base(server)}/hop/{MAX_REDIRECTS}")
    assert data == server.photo and final == f"{base(server)}/sky/apod4.jpg"
    with pytest.raises(DownloadError, match="redirected more than 5 times"):
        fetch(f"{base(server)}/hop/{MAX_REDIRECTS + 1}")
    with pytest.raises(DownloadError, match="redirected more than 5 times"):
        fetch(f"{base(server)}/loop")


def test_every_redirect_hop_is_checked_again(server: _Server) -> None:
    """The first hop passes the check, the redirect target does not: it is never contacted.

    The check here admits 127.0.0.1 only; the target 127.0.0.2 is loopback too, so even a
    broken check could not send anything off this machine.
    """
    port = server.server_address[1]
    checked: list[str] = []

    def only_127_0_0_1(address: str) -> str | None:
        checked.append(address)
        return None if address == "127.0.0.1" else f"{address} is not allowed here"

    with pytest.raises(UnsafeURL, match="127.0.0.2 is not allowed here"):
        fetch(f"{base(server)}/to/http://127.0.0.2:{port}/sky/apod4.jpg", check=only_127_0_0_1)
    assert checked == ["127.0.0.1", "127.0.0.2"]
    assert server.hits == [f"/to/http://127.0.0.2:{port}/sky/apod4.jpg"]
    # What the default checker says about the usual redirect targets of an SSRF attempt.
    for target in (
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/a.jpg",
        "http://[fd00::1]/a.jpg",
    ):
        with pytest.raises(UnsafeURL):
            resolve(parse_url(target).host, 80)
    # Even with NOVA_URL_ALLOW_PRIVATE the metadata address stays refused (checked only:
    # this test never lets a request go towards a non-loopback address).
    assert address_problem("169.254.169.254", allow_private=True) is not None
    # A redirect to another scheme is refused on its hop too.
    with pytest.raises(UnsafeURL, match="only http:// and https://"):
        fetch(f"{base(server)}/to/file:///etc/passwd")


def test_size_limits(server: _Server) -> None:
    with pytest.raises(DownloadTooLarge, match="larger than 1 MB"):
        fetch(f"{base(server)}/big", max_bytes=MB)
    with pytest.raises(DownloadTooLarge, match="larger than 1 MB"):
        fetch(f"{base(server)}/big-unannounced", max_bytes=MB)
    with pytest.raises(DownloadError, match="closed before the whole file arrived"):
        fetch(f"{base(server)}/short")
    with pytest.raises(DownloadError, match="404"):
        fetch(f"{base(server)}/missing.jpg")


@pytest.mark.parametrize("path", ["/slow", "/silent"])
def test_the_whole_download_is_limited_in_time(server: _Server, path: str) -> None:
    start = time.monotonic()
    with pytest.raises(DownloadTimeout, match="took longer than 1.5 s"):
        fetch(f"{base(server)}{path}", timeout=1.5)
    assert time.monotonic() - start < 30  # the server would trickle or stay silent far longer


@pytest.fixture
def tls_server(server: _Server, tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext]]:
    """The same handler over TLS on 127.0.0.1, with a self-signed certificate for localhost;
    yields the port and a client context that trusts that certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.photo, httpd.hits, httpd.stop = server.photo, [], threading.Event()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], ssl.create_default_context(cafile=str(cert))
    httpd.stop.set()
    httpd.shutdown()
    httpd.server_close()


def test_https_connects_to_the_checked_address_and_verifies_the_host_name(
    server: _Server, tls_server: tuple[int, ssl.SSLContext]
) -> None:
    port, trusting = tls_server
    # The name is resolved and checked, the socket goes to 127.0.0.1, and SNI and the
    # certificate check use "localhost".
    data, _ = fetch(f"https://localhost:{port}/sky/apod4.jpg", tls_context=trusting)
    assert data == server.photo
    # The certificate is for localhost, not for the address: refused.
    with pytest.raises(DownloadError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(f"https://127.0.0.1:{port}/sky/apod4.jpg", tls_context=trusting)
    # Without trusting the self-signed certificate: refused.
    with pytest.raises(DownloadError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(f"https://localhost:{port}/sky/apod4.jpg")


# -- through the worker -----------------------------------------------------------------------


def submit(client: FlaskClient, url: str) -> None:
    assert client.post("/upload", data={"url": url}).status_code == 303


def failed_submission() -> Submission:
    submission = db.session.scalars(select(Submission)).one()
    db.session.refresh(submission)
    assert submission.processing_finished is not None
    job = db.session.scalars(select(Job)).one()
    assert job.status == "failure" and job.failure_reason == submission.error_message
    assert job.queued_at <= job.started_at <= job.finished_at  # the status JSON's order
    return submission


def test_worker_refuses_loopback_urls_by_default(client: FlaskClient, server: _Server) -> None:
    submit(client, f"{base(server)}/sky/apod4.jpg")
    run_worker()
    submission = failed_submission()
    assert submission.error_message == (
        f"Failed to download {base(server)}/sky/apod4.jpg: 127.0.0.1 is a loopback address; "
        "Nova downloads only from public addresses"
    )
    assert server.hits == []


@pytest.mark.parametrize("path", ["/big", "/big-unannounced"])
def test_worker_fails_an_oversized_download(
    client: FlaskClient, server: _Server, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setenv("NOVA_URL_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("NOVA_MAX_UPLOAD_MB", "1")
    submit(client, f"{base(server)}{path}")
    run_worker()
    assert failed_submission().error_message == (
        f"Failed to download {base(server)}{path}: the file is larger than 1 MB"
    )


@pytest.mark.parametrize("path", ["/slow", "/silent"])
def test_worker_fails_a_slow_download(
    client: FlaskClient, server: _Server, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.setenv("NOVA_URL_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("NOVA_DOWNLOAD_TIMEOUT", "2")
    submit(client, f"{base(server)}{path}")
    start = time.monotonic()
    run_worker()
    assert time.monotonic() - start < 30
    assert failed_submission().error_message == (
        f"Failed to download {base(server)}{path}: the download took longer than 2 s"
    )


def test_redirected_download_is_named_after_the_final_url(
    app: Flask, client: FlaskClient, server: _Server
) -> None:
    change_settings(app, URL_ALLOW_PRIVATE=True)
    submit(client, f"{base(server)}/hop/3")
    submission = db.session.scalars(select(Submission)).one()
    assert len(intake.process_submission(submission.id)) == 1
    image = submission.user_images[0]
    assert image.original_filename == "apod4.jpg" and image.kind == "jpeg"
    assert server.hits == ["/hop/3", "/hop/2", "/hop/1", "/sky/apod4.jpg"]


def test_a_non_http_url_that_reached_the_queue_is_refused(app: Flask) -> None:
    """The forms refuse such URLs; the worker refuses them again (defence in depth)."""
    options = submissions.SubmissionOptions(params=SolveParams())
    submission = submissions.submit_url("file:///etc/passwd", options)
    assert intake.process_submission(submission.id) == []
    db.session.refresh(submission)
    assert submission.error_message == (
        "Failed to download file:///etc/passwd: only http:// and https:// URLs can be downloaded"
    )
