"""Request parsing shared by the pages and the API."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from werkzeug.datastructures import FileStorage

QUOTED_FILENAME = re.compile(r'filename="([^"]*)"')
# A multipart boundary sent bare although it holds characters a bare value cannot (RFC 2046
# wants it quoted then): AstroImageJ sends "multipart/form-data;boundary====...9876543210==".
BARE_BOUNDARY = re.compile(r"^(multipart/form-data\s*;(?:.*;)?\s*boundary=)([^\s\";]+)(.*)$", re.I)
TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class QuoteBareBoundaries:
    """WSGI middleware: quote a bare multipart boundary that Werkzeug would misread.

    Werkzeug takes ``boundary====x==`` as an empty or shortened boundary and finds no
    parts; nova (Django) reads the whole value. Quoting it leaves the boundary as sent.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        match = BARE_BOUNDARY.match(environ.get("CONTENT_TYPE", ""))
        if match and not TOKEN.match(match.group(2)):
            environ["CONTENT_TYPE"] = f'{match.group(1)}"{match.group(2)}"{match.group(3)}'
        return self.app(environ, start_response)


def client_filename(file: FileStorage) -> str:
    """The file name as the client sent it.

    Qt clients send full Windows paths (``filename="C:\\Users\\me\\x.fits"``) without
    escaping the backslashes, and a standard parser would read ``\\U`` as an escaped ``U``.
    Take the quoted value verbatim so that the basename can be split off afterwards; an
    RFC 5987 ``filename*`` (sent by .NET) is decoded by Werkzeug already.
    """
    raw = file.headers.get("Content-Disposition", "")
    if "filename*=" not in raw and (match := QUOTED_FILENAME.search(raw)):
        return match.group(1)
    return file.filename or ""


def save_files(files: list[FileStorage], work_dir: Path, prefix: str) -> list[tuple[Path, str]]:
    """Save each uploaded file in ``work_dir`` (numbered, in part order) and pair its path
    with the name the client sent."""
    saved = []
    for number, file in enumerate(files):
        path = work_dir / f"{prefix}{number:05d}"
        file.save(path)
        saved.append((path, client_filename(file)))
    return saved
