"""The bytes real nova clients put on the wire, as their source builds them.

Each builder says which client and file it follows; test_api posts them to the app,
test_clients replays whole client sessions with them against a live server.
"""

from __future__ import annotations

import re
from urllib.parse import quote_plus

BOUNDARY_PY = "===============7330845974216740156=="


def client_py_body(json_text: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """The body nova's client.py builds by hand: quoted boundary, bare \\n after boundaries."""
    body = (
        (
            f"--{BOUNDARY_PY}\n"
            "Content-Type: text/plain\r\nMIME-Version: 1.0\r\n"
            'Content-disposition: form-data; name="request-json"\r\n\r\n'
            f"{json_text}\n--{BOUNDARY_PY}\n"
            "Content-Type: application/octet-stream\r\nMIME-Version: 1.0\r\n"
            f'Content-disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
        ).encode()
        + data
        + f"\n--{BOUNDARY_PY}--\n".encode()
    )
    return body, f'multipart/form-data; boundary="{BOUNDARY_PY}"'


def qt_body(json_text: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """QHttpMultiPart as StellarSolver uses it: JSON typed application/text/plain, full path."""
    boundary = "boundary_.oOo._MTIzNDU2Nzg5MA==MTIzNDU2Nzg5MA=="
    body = (
        (
            f"--{boundary}\r\nContent-Type: application/text/plain\r\n"
            f'Content-Disposition: form-data; name="request-json"\r\n\r\n{json_text}\r\n'
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    # QNetworkAccessManager quotes the boundary (it holds base64 "=" characters).
    return body, f'multipart/form-data; boundary="{boundary}"'


def dotnet_body(json_text: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """.NET MultipartFormDataContent (N.I.N.A.): unquoted names and a filename* parameter."""
    boundary = "8d7f3c55-2f6b-4d2e-9a41-1b2c3d4e5f60"
    body = (
        (
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Disposition: form-data; name=request-json\r\n\r\n{json_text}\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Disposition: form-data; name=file; filename={filename}; "
            f"filename*=utf-8''{filename}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f'multipart/form-data; boundary="{boundary}"'


def dotnet_url_encode(text: str) -> str:
    """System.Web.HttpUtility.UrlEncode (N.I.N.A.'s login): '+' for spaces, lower-case
    escapes, and "-_.!*()" left alone."""
    encoded = quote_plus(text, safe="-_.!*()")
    return re.sub("%[0-9A-F]{2}", lambda escape: escape.group(0).lower(), encoded)


def java_url_encode(text: str) -> str:
    """java.net.URLEncoder.encode (AstroImageJ's login): '+' for spaces, "-_.*" kept."""
    return quote_plus(text, safe="-_.*")


ASTROIMAGEJ_BOUNDARY = "================9876543210=="


def astroimagej_body(json_text: str, star_lines: str) -> tuple[bytes, str]:
    """AstroImageJ's hand-built upload (Astronomy_/src/main/java/astroj/Astrometry.java):
    CRLF line ends, no space after ";" in the dispositions, an unquoted boundary holding
    "=", and the star list (x \t y per line) as the file maxima.tbl."""
    crlf = "\r\n"
    body = (
        f"--{ASTROIMAGEJ_BOUNDARY}{crlf}Content-Type: text/plain{crlf}MIME-Version: 1.0{crlf}"
        f'Content-disposition: form-data;name="request-json"{crlf}{crlf}{json_text}{crlf}'
        f"--{ASTROIMAGEJ_BOUNDARY}{crlf}Content-Type: application/octet-stream{crlf}"
        f"MIME-Version: 1.0{crlf}"
        f'Content-disposition: form-data;name="file";filename="maxima.tbl"{crlf}{crlf}'
        f"{star_lines}--{ASTROIMAGEJ_BOUNDARY}--{crlf}"
    )
    return body.encode(), f"multipart/form-data;boundary={ASTROIMAGEJ_BOUNDARY}"
