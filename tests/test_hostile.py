"""Hostile inputs against a live stack: every one gets a clear error, nothing crashes.

A generated corpus (broken and hostile files, compression and archive bombs, unsafe archive
members, absurd star lists, malformed ``request-json``, wrong types for every API argument,
URLs aimed at the server's own network, and redirects to them) goes through the real API
and the real upload form of ``nova up`` (gunicorn and a real worker). Each input must end
in a clear error: nova's API error envelope, a refused form with its message, or a
submission whose job ends ``failure`` with a reason. No answer may be a 5xx, the worker
must survive all of it, and the service must still solve a photo afterwards.
"""

from __future__ import annotations

import bz2
import gzip
import http.server
import io
import json
import re
import struct
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import redis
import requests
from astropy.io import fits
from PIL import Image
from rq import Queue
from rq.registry import FailedJobRegistry

from .conftest import LiveStack, live_stack, record_figure, wait_for

pytestmark = pytest.mark.engine

MB = 1 << 20
# This test is about what each input does, not how many are allowed.
NO_RATE_LIMITS = {
    "NOVA_UPLOAD_RATE_LIMIT": "1000000/minute",
    "NOVA_LOGIN_RATE_LIMIT": "1000000/minute",
    "NOVA_LOGIN_FAILURE_LIMIT": "1000000/minute",
    "NOVA_MAX_QUEUED_JOBS": "1000000",
}
HINT = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}  # apod4 is 33 deg wide


# -- the corpus: files -------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but holds almost no data (a few dozen bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def raster(fmt: str, size: tuple[int, int] = (200, 150)) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(
        buffer, format=fmt
    )
    return buffer.getvalue()


def fits_card(key: str, value: str) -> bytes:
    return f"{key:<8}= {value:>20}".ljust(80).encode()


def fits_header(cards: list[tuple[str, str]], end: bool = True) -> bytes:
    text = b"".join(fits_card(k, v) for k, v in cards) + (b"END".ljust(80) if end else b"")
    return text.ljust(-(-len(text) // 2880) * 2880 or 2880, b" ")


def fits_image(shape: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.zeros(shape, dtype=np.int16)).writeto(buffer)
    return buffer.getvalue()


def fits_table(x: list[float], y: list[float], **header: int) -> bytes:
    buffer = io.BytesIO()
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="X", format="D", array=x), fits.Column(name="Y", format="D", array=y)]
    )
    table.header.update(header)
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    return buffer.getvalue()


def gzip_bomb(expanded: int) -> bytes:
    """Concatenated gzip members of zeros: ~1 kB per MB expanded (multi-member is valid gzip)."""
    return gzip.compress(b"\0" * MB, 9) * (expanded // MB)


def bzip2_bomb(expanded: int) -> bytes:
    return bz2.compress(b"\0" * MB, 9) * (expanded // MB)


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def zip_of(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: the mode lives in the high 16 bits
    info.external_attr = (0o120777) << 16
    return info


def zip_overlapping(members: int, size: int) -> bytes:
    """One compressed member referenced by many central-directory entries (overlap bomb)."""
    data = zip_of([("m", b"\0" * size)])
    end = data.rindex(b"PK\x05\x06")
    cd_offset = struct.unpack("<I", data[end + 16 : end + 20])[0]
    entry = data[cd_offset:end]
    directory = entry * members
    eocd = bytearray(data[end:])
    struct.pack_into("<HHII", eocd, 8, members, members, len(directory), cd_offset)
    return data[:cd_offset] + directory + bytes(eocd)


def text_list(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def file_corpus(apod: Path) -> dict[str, bytes]:
    jpeg = (apod / "apod4.jpg").read_bytes()
    png = raster("PNG")
    tiff = raster("TIFF")
    gif = raster("GIF")
    rng = np.random.default_rng(11)
    corpus: dict[str, bytes] = {
        "zero-byte": b"",
        "one-byte": b"\xff",
        "jpeg-magic-only": b"\xff\xd8\xff",
        "png-magic-only": b"\x89PNG\r\n\x1a\n",
        "fits-magic-only": b"SIMPLE  =",
        "gzip-magic-only": b"\x1f\x8b",
        "bzip2-magic-only": b"BZh",
        "random-64k": rng.bytes(65536),
        "html": b"<html><script>alert(1)</script></html>",
        "prose": b"The quick brown fox\njumps over the lazy dog\nthree\nfour\nfive\n",
        "utf16-text": "1 2\n3 4\n".encode("utf-16"),
    }
    for cut in (20, 200, 2000, 20000, len(jpeg) // 2, len(jpeg) - 100):
        corpus[f"jpeg-truncated-{cut}"] = jpeg[:cut]
    for offset in (300, 5000, len(jpeg) // 3):
        broken = bytearray(jpeg)
        broken[offset : offset + 4000] = rng.bytes(4000)
        corpus[f"jpeg-corrupt-at-{offset}"] = bytes(broken)
    corpus["jpeg-huge-dimensions"] = jpeg[:2] + jpeg[2:].replace(
        b"\xff\xc0\x00\x11\x08", b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff", 1
    )
    for cut in (10, 30, 60, len(png) // 2, len(png) - 13):
        corpus[f"png-truncated-{cut}"] = png[:cut]
    corpus["png-bad-crc"] = png[:29] + b"\0\0\0\0" + png[33:]
    corpus["png-100000x100000-header-only"] = png_header_only(100_000, 100_000)
    corpus["png-14000x14000-header-only"] = png_header_only(14_000, 14_000)
    corpus["png-0x0"] = png_header_only(0, 0)
    corpus["png-1x1"] = raster("PNG", (1, 1))
    corpus["tiff-truncated"] = tiff[: len(tiff) // 3]
    corpus["gif-truncated"] = gif[: len(gif) // 3]
    image = fits_image()
    for cut in (80, 2880, len(image) - 1000):
        corpus[f"fits-truncated-{cut}"] = image[:cut]
    base = [("SIMPLE", "T"), ("BITPIX", "16")]
    for name, cards in {
        "naxis-999": [("NAXIS", "999")],
        "naxis-negative": [("NAXIS", "-2")],
        "naxis1-huge": [("NAXIS", "2"), ("NAXIS1", "100000"), ("NAXIS2", "100000")],
        "naxis1-1e12": [("NAXIS", "2"), ("NAXIS1", "1000000000000"), ("NAXIS2", "2")],
        "naxis1-negative": [("NAXIS", "2"), ("NAXIS1", "-64"), ("NAXIS2", "64")],
        "naxis1-text": [("NAXIS", "2"), ("NAXIS1", "'abc'"), ("NAXIS2", "64")],
        "naxis-3-cube": [("NAXIS", "3"), ("NAXIS1", "5000"), ("NAXIS2", "5000"), ("NAXIS3", "99")],
        "under-limit-no-data": [("NAXIS", "2"), ("NAXIS1", "14000"), ("NAXIS2", "14000")],
    }.items():
        corpus[f"fits-{name}"] = fits_header(base + cards)
    corpus["fits-bitpix-7"] = fits_header(
        [("SIMPLE", "T"), ("BITPIX", "7"), ("NAXIS", "2"), ("NAXIS1", "8"), ("NAXIS2", "8")]
    )
    corpus["fits-no-end"] = fits_header(base + [("NAXIS", "0")], end=False)
    corpus["fits-empty-primary"] = fits_header(base + [("NAXIS", "0")])
    corpus["fits-table-no-xy"] = fits_table([1.0, 2.0], [3.0, 4.0]).replace(
        b"TTYPE1  = 'X", b"TTYPE1  = 'Q"
    )
    corpus["fits-table-nan"] = fits_table([float("nan")] * 5, [float("nan")] * 5)
    corpus["fits-table-inf"] = fits_table([float("inf"), 1.0], [2.0, float("-inf")])
    corpus["fits-table-empty"] = fits_table([], [])
    corpus["fits-table-imagew-huge"] = fits_table([1.0, 2.0, 3.0], [1.0, 5.0, 3.0], IMAGEW=10**15)
    corpus["fits-table-negative"] = fits_table([-5.0, 10.0, 20.0], [3.0, -4.0, 8.0])
    # Star lists as text.
    corpus["stars-nan"] = text_list(["nan nan"] * 20)
    corpus["stars-inf"] = text_list(["inf 5", "5 -inf", "1e999 1e999"])
    corpus["stars-huge-values"] = text_list(["1e308 1e308", "1.7e308 1e300", "5 5"])
    corpus["stars-negative"] = text_list(["-1 -1", "-100 5"])
    corpus["stars-one-column"] = text_list(["1", "2", "3"])
    corpus["stars-zero-span"] = text_list(["0 0", "0 0", "0.5 0.5"])
    corpus["stars-200k"] = text_list([f"{i % 997}.5 {i % 991}.5" for i in range(200_000)])
    corpus["stars-long-line"] = b"1 2 " + b"3 " * 500_000 + b"\n"
    # Compression bombs and broken compressed data.
    corpus["gzip-bomb-300mb"] = gzip_bomb(300 * MB)
    corpus["bzip2-bomb-300mb"] = bzip2_bomb(300 * MB)
    corpus["gzip-of-gzip"] = gzip.compress(gzip.compress(png))
    corpus["gzip-truncated"] = gzip.compress(png)[:-30]
    corpus["gzip-bad-crc"] = gzip.compress(png)[:-8] + b"\0" * 8
    corpus["bzip2-truncated"] = bz2.compress(png)[: len(bz2.compress(png)) // 2]
    corpus["gzip-of-garbage"] = gzip.compress(rng.bytes(5000))
    # Archives: bombs, traversal, links, devices, corruption.
    corpus["zip-ratio-bomb"] = zip_of([("zeros.fits", b"\0" * (20 * MB))])
    corpus["zip-overlap-bomb"] = zip_overlapping(300, 5 * MB)
    corpus["zip-too-many-members"] = zip_of([(f"m{i}.txt", b"1 2\n") for i in range(400)])
    corpus["zip-traversal"] = zip_of([("../../../../tmp/evil.png", png)])
    corpus["zip-absolute"] = zip_of([("/etc/evil.png", png)])
    corpus["zip-symlink"] = zip_of([(zip_symlink("link.png"), b"/etc/passwd")])
    corpus["zip-truncated"] = zip_of([("a.png", png)])[:-30]
    corpus["zip-empty"] = zip_of([])
    corpus["zip-nested-zip"] = zip_of([("inner.zip", zip_of([("a.png", png)]))])
    tar_cases: dict[str, list[tuple[tarfile.TarInfo, bytes]]] = {
        "traversal": [(tar_entry("../../../../tmp/evil.png"), png)],
        "absolute": [(tar_entry("/tmp/evil.png"), png)],
        "symlink": [(tar_entry("link.png", tarfile.SYMTYPE, linkname="/etc/passwd"), b"")],
        "symlink-relative": [(tar_entry("up.png", tarfile.SYMTYPE, linkname="../../x"), b"")],
        "hardlink": [(tar_entry("hard.png", tarfile.LNKTYPE, linkname="/etc/shadow"), b"")],
        "char-device": [(tar_entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3), b"")],
        "block-device": [(tar_entry("sda", tarfile.BLKTYPE, devmajor=8, devminor=0), b"")],
        "fifo": [(tar_entry("pipe", tarfile.FIFOTYPE), b"")],
        "all-unsafe": [
            (tar_entry("../a.png"), png),
            (tar_entry("b.png", tarfile.SYMTYPE, linkname="/etc/passwd"), b""),
            (tar_entry("c", tarfile.CHRTYPE, devmajor=1, devminor=5), b""),
        ],
        "setuid-file": [(tar_entry("suid.png", mode=0o4755), b"garbage")],
    }
    for name, entries in tar_cases.items():
        corpus[f"tar-{name}"] = tar_of(entries)
        corpus[f"tar.gz-{name}"] = gzip.compress(tar_of(entries))
    corpus["tar-truncated"] = tar_of([(tar_entry("a.png"), png)])[:700]
    corpus["tar-member-bomb"] = gzip.compress(
        tar_of([(tar_entry("zeros.fits"), b"\0" * (30 * MB))]), 1
    )
    corpus["tar.bz2-too-many"] = bz2.compress(
        tar_of([(tar_entry(f"m{i}.txt"), b"1 2\n") for i in range(300)])
    )
    return corpus


# -- the corpus: API arguments and URLs ------------------------------------------------------

MALFORMED_JSON = {
    "missing": None,
    "empty": "",
    "null": "null",
    "array": "[]",
    "number": "1",
    "string": '"x"',
    "unclosed": '{"apikey": ',
    "single-quotes": "{'apikey': 'x'}",
    "nan-literal": '{"apikey": NaN}',
    "deep-nesting": "[" * 100_000 + "]" * 100_000,
    "nul-escape": '{"apikey": "\\u0000", "session": "\\u0000"}',
    "lone-surrogate": '{"apikey": "\\ud800", "session": "\\udfff"}',
    "huge-string": json.dumps({"apikey": "k" * 2_000_000}),
    "huge-number": '{"session": 1' + "0" * 5000 + "}",
}
JSON_ENDPOINTS = ("login", "upload", "url_upload", "submission_images", "myjobs")

ARGUMENTS = (
    "session",
    "publicly_visible",
    "allow_commercial_use",
    "allow_modifications",
    "album",
    "scale_units",
    "scale_type",
    "scale_lower",
    "scale_upper",
    "scale_est",
    "scale_err",
    "center_ra",
    "center_dec",
    "radius",
    "parity",
    "tweak_order",
    "downsample_factor",
    "positional_error",
    "crpix_center",
    "invert",
    "use_sextractor",
    "image_width",
    "image_height",
    "x",
    "y",
    "url",
)
WRONG_VALUES: tuple[object, ...] = (
    [1, 2],
    {"a": 1},
    "not a number",
    -1e308,
    10**400,
    "\u0000",
    "\ud800",
)

# Direct URLs at the server itself, its network and the cloud metadata service.
SSRF_URLS = (
    "http://127.0.0.1/x.jpg",
    "http://127.0.0.1:6379/",  # redis
    "http://127.1/x.jpg",
    "http://2130706433/x.jpg",
    "http://0x7f000001/x.jpg",
    "http://localhost/x.jpg",
    "http://localhost./x.jpg",
    "http://10.0.0.1/x.jpg",
    "http://10.255.255.254:8080/x.jpg",
    "http://172.16.0.1/x.jpg",
    "http://192.168.0.1/x.jpg",
    "http://100.64.0.1/x.jpg",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/x.jpg",
    "http://[::ffff:127.0.0.1]/x.jpg",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[fe80::1]/x.jpg",
    "http://[fd00::1]/x.jpg",
    "http://0.0.0.0/x.jpg",
    "http://[::]/x.jpg",
    "http://224.0.0.1/x.jpg",
    "https://127.0.0.1/x.jpg",
    "http://user:pass@127.0.0.1/x.jpg",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://10.0.0.1/x.jpg",
    "dict://127.0.0.1:6379/info",
    "javascript:alert(1)",
    "http://",
    "http://no-such-host.invalid/x.jpg",
    "http://exa\u0000mple.org/x.jpg",
    "http://" + "a" * 3000 + ".org/x.jpg",
)
# Where the redirect server sends its visitors.
REDIRECT_TARGETS = {
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "metadata-v6": "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "link-local-v6": "http://[fe80::1]/x.jpg",
    "unspecified": "http://0.0.0.0/x.jpg",
    "multicast": "http://224.0.0.1/x.jpg",
    "reserved": "http://240.0.0.1/x.jpg",
    "file": "file:///etc/passwd",
    "gopher": "gopher://127.0.0.1:6379/_INFO",
    "loop": "/redirect/loop",
    "empty": "",
}


class Redirector(http.server.BaseHTTPRequestHandler):
    """/redirect/<name> answers 302 to REDIRECT_TARGETS[name]; /redirect/loop to itself."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        self.send_response(302)
        self.send_header("Location", REDIRECT_TARGETS.get(name, "/redirect/loop"))
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def redirector() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# -- sending and judging -----------------------------------------------------------------------


@dataclass
class Tally:
    """What the corpus did: each input's outcome, and the problems found."""

    tried: int = 0
    envelopes: int = 0
    refused_forms: int = 0
    submissions: dict[int, str] = field(default_factory=dict)  # id -> input name
    server_errors: list[str] = field(default_factory=list)
    unclear: list[str] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)  # a hostile input that "solved"

    def judge_api(self, name: str, response: requests.Response) -> None:
        self.tried += 1
        if response.status_code >= 500:
            self.server_errors.append(f"{name}: HTTP {response.status_code}")
            return
        try:
            answer = json.loads(response.text)
        except ValueError:
            self.unclear.append(f"{name}: not JSON: {response.text[:100]!r}")
            return
        if answer.get("status") == "error" and answer.get("errormessage"):
            self.envelopes += 1
        elif answer.get("status") == "success" and "subid" in answer:
            self.submissions[int(answer["subid"])] = name
        elif answer.get("status") == "success" and "session" in answer:
            self.succeeded.append(f"{name}: logged in")
        else:
            self.unclear.append(f"{name}: {answer}")

    def judge_form(self, name: str, response: requests.Response) -> None:
        self.tried += 1
        if response.status_code >= 500:
            self.server_errors.append(f"{name}: HTTP {response.status_code}")
        elif response.status_code == 303:
            match = re.search(r"/status/(\d+)$", response.headers["Location"])
            assert match, response.headers["Location"]
            self.submissions[int(match.group(1))] = name
        elif response.status_code in (400, 403, 413) and 'class="error' in response.text:
            self.refused_forms += 1
        else:
            self.unclear.append(f"{name}: form answered {response.status_code}")


class Client:
    """An API user and a browser session (with its CSRF token) on one live stack."""

    def __init__(self, stack: LiveStack) -> None:
        self.base = stack.base
        key = re.search(r"API key: (\w+)", stack.nova("create-user", "hostile@example.org"))
        assert key, "create-user prints the key"
        self.api = requests.Session()
        login = self.api.post(
            f"{self.base}/api/login",
            data={"request-json": json.dumps({"apikey": key.group(1)})},
            timeout=30,
        ).json()
        self.session = login["session"]
        self.browser = requests.Session()
        page = self.browser.get(f"{self.base}/upload", timeout=30).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token
        self.csrf = token.group(1)

    def api_post(self, endpoint: str, raw_json: str | None, **files: bytes) -> requests.Response:
        data = {} if raw_json is None else {"request-json": raw_json}
        parts = {name: (f"{name}.bin", content) for name, content in files.items()}
        return self.api.post(f"{self.base}/api/{endpoint}", data=data, files=parts, timeout=120)

    def args(self, **arguments: object) -> str:
        return json.dumps({"session": self.session, **arguments})

    def form_post(
        self, data: dict[str, str], files: dict[str, bytes] | None = None
    ) -> requests.Response:
        parts = {name: (f"{name}.bin", content) for name, content in (files or {}).items()}
        return self.browser.post(
            f"{self.base}/upload",
            data={"csrf_token": self.csrf, **data},
            files=parts or None,
            allow_redirects=False,
            timeout=120,
        )

    def state(self, submission_id: int) -> dict:  # type: ignore[type-arg]
        response = self.api.get(f"{self.base}/status/{submission_id}/state", timeout=30)
        assert response.status_code == 200, (submission_id, response.status_code)
        return response.json()


def wait_until_ended(client: Client, tally: Tally, stack: LiveStack, timeout: float) -> None:
    """Every submission must end: failed with a reason (a hostile input must never solve)."""
    pending = dict(tally.submissions)
    states: dict[int, dict] = {}  # type: ignore[type-arg]

    def all_ended() -> bool:
        for submission_id in list(pending):
            state = client.state(submission_id)
            if state["finished"]:
                states[submission_id] = state
                del pending[submission_id]
        return not pending

    assert wait_for(all_ended, timeout, 1.0), (
        {pending[s]: client.state(s) for s in list(pending)[:5]},
        stack.log_path.read_text()[-3000:],
    )
    for submission_id, state in states.items():
        name = tally.submissions[submission_id]
        jobs = [image["job"] for image in state["images"] if image["job"]]
        if any(job["status"] == "success" for job in jobs):
            tally.succeeded.append(name)
            continue
        reasons = [job["failure_reason"] for job in jobs] + [state["error_message"]]
        reasons = [reason for reason in reasons if reason]
        if not jobs or not reasons or any("Internal error" in reason for reason in reasons):
            tally.unclear.append(f"{name}: {state}")


def worker_pids(stack: LiveStack) -> set[int]:
    import subprocess

    found = subprocess.run(
        ["pgrep", "-P", str(stack.process.pid), "-f", "nova worker"], capture_output=True, text=True
    )
    return {int(pid) for pid in found.stdout.split()}


def failed_rq_jobs(stack: LiveStack) -> int:
    connection = redis.Redis.from_url(stack.env["NOVA_REDIS_URL"])
    return sum(
        len(FailedJobRegistry(queue=Queue(name, connection=connection)))
        for name in ("default", "solve")
    )


def solve_apod4(client: Client, apod: Path) -> dict:  # type: ignore[type-arg]
    response = client.api_post(
        "upload", client.args(**HINT), file=(apod / "apod4.jpg").read_bytes()
    )
    submission_id = response.json()["subid"]
    assert wait_for(lambda: client.state(submission_id)["finished"], 120, 0.5)
    return client.state(submission_id)["images"][0]["job"]


# -- the tests -----------------------------------------------------------------------------------


def test_hostile_corpus_gets_clear_errors_and_the_service_survives(
    tmp_path: Path, apod: Path
) -> None:
    corpus = file_corpus(apod)
    # A short time limit: a hostile star list must not hold the worker for minutes.
    with live_stack(tmp_path, NOVA_SOLVE_TIME_LIMIT="30", **NO_RATE_LIMITS) as stack:
        client = Client(stack)
        workers_before = worker_pids(stack)
        assert workers_before, "nova up started a worker"
        tally = Tally()
        for name, data in corpus.items():
            # Through the API with a scale hint (so that any job that does run ends quickly)...
            tally.judge_api(
                f"api file {name}", client.api_post("upload", client.args(**HINT), file=data)
            )
            # ...and through the upload form, anonymously.
            tally.judge_form(f"form file {name}", client.form_post({}, {"file": data}))
        for name, raw in MALFORMED_JSON.items():
            for endpoint in JSON_ENDPOINTS:
                tally.judge_api(f"json {name} to {endpoint}", client.api_post(endpoint, raw))
            # Read endpoints look for a session in request-json too (id 1: no submission has
            # it, ids are random; the body is read all the same).
            tally.tried += 1
            status = client.api_post("submissions/1", raw).status_code
            if status >= 500:
                tally.server_errors.append(f"json {name} to submissions/1: HTTP {status}")
        for argument in ARGUMENTS:
            for value in WRONG_VALUES:
                # A refused URL: whatever the argument, nothing is ever downloaded.
                arguments = {"session": client.session, "url": "http://127.0.0.1:9/x.jpg"}
                raw = json.dumps({**arguments, argument: value})
                tally.judge_api(f"{argument}={value!r:.20}", client.api_post("url_upload", raw))
        for value in WRONG_VALUES + (None, "", 0):
            tally.judge_api(
                f"apikey={value!r:.20}", client.api_post("login", json.dumps({"apikey": value}))
            )
            tally.judge_api(
                f"subid={value!r:.20}",
                client.api_post("submission_images", client.args(subid=value)),
            )
        for name, (x, y) in {
            "nan": ("NaN", "NaN"),
            "infinity": ("[Infinity, 1]", "[1, -Infinity]"),
            "mismatched": ("[1, 2, 3]", "[1, 2]"),
            "strings": ('["1", "2"]', '["3", "4"]'),
            "nested": ("[[1], [2]]", "[[3], [4]]"),
            "booleans": ("[true, false]", "[false, true]"),
            "empty": ("[]", "[]"),
            "over-limit": (json.dumps([1.5] * 100_001), json.dumps([2.5] * 100_001)),
            "only-x": ("[1, 2, 3]", "null"),
        }.items():
            raw = f'{{"session": "{client.session}", "x": {x}, "y": {y}}}'
            tally.judge_api(f"xy {name}", client.api_post("upload", raw))
        for url in SSRF_URLS:
            tally.judge_api(
                f"url_upload {url[:60]}", client.api_post("url_upload", client.args(url=url))
            )
            tally.judge_form(f"form url {url[:60]}", client.form_post({"url": url}))
        for number in ("9" * 30, str(2**63), "-1"):
            for path in (f"api/submissions/{number}", f"api/jobs/{number}", f"status/{number}"):
                tally.tried += 1
                status = client.api.get(f"{client.base}/{path}", timeout=30).status_code
                if status >= 500:
                    tally.server_errors.append(f"GET /{path}: {status}")
        wait_until_ended(client, tally, stack, timeout=300)

        crashes = len(workers_before - worker_pids(stack)) + failed_rq_jobs(stack)
        tracebacks = stack.log_path.read_text().count("Traceback")
        after = solve_apod4(client, apod)
        record_figure(
            f"hostile inputs: {tally.tried} tried -> {tally.envelopes} API error envelopes, "
            f"{tally.refused_forms} refused forms, {len(tally.submissions)} submissions ended "
            f"failure with a reason; worker crashes = {crashes}, tracebacks = {tracebacks}, "
            f"HTTP 500s = {len(tally.server_errors)}, unclear = {len(tally.unclear)}, "
            f"apod4 afterwards: {after['status']}"
        )
        assert tally.tried >= 200
        assert tally.server_errors == []
        assert tally.unclear == []
        assert tally.succeeded == []
        assert crashes == 0
        assert tracebacks == 0, stack.log_path.read_text()[-5000:]
        assert after["status"] == "success", after


def test_redirects_to_forbidden_addresses_are_refused_at_every_hop(
    tmp_path: Path, apod: Path, redirector: str
) -> None:
    """With NOVA_URL_ALLOW_PRIVATE the loopback redirect server may be reached; the hops it
    redirects to (metadata, link-local, other schemes, endless loops) never are."""
    with live_stack(tmp_path, NOVA_URL_ALLOW_PRIVATE="true", **NO_RATE_LIMITS) as stack:
        client = Client(stack)
        tally = Tally()
        for name in REDIRECT_TARGETS:
            url = f"{redirector}/redirect/{name}"
            tally.judge_api(f"redirect {name}", client.api_post("url_upload", client.args(url=url)))
            tally.judge_form(f"form redirect {name}", client.form_post({"url": url}))
        wait_until_ended(client, tally, stack, timeout=120)
        reasons = [
            client.state(submission)["error_message"] or "" for submission in tally.submissions
        ]
        record_figure(
            f"redirects: {tally.tried} URLs redirecting to forbidden targets -> "
            f"{len(tally.submissions)} failed with a reason, HTTP 500s = {len(tally.server_errors)}"
        )
        assert tally.server_errors == [] and tally.unclear == [] and tally.succeeded == []
        assert len(tally.submissions) == tally.tried
        assert all("Failed to download" in reason for reason in reasons), reasons
        # The metadata address is named in the refusal: the hop was checked, not fetched.
        assert any("169.254.169.254" in reason for reason in reasons), reasons
