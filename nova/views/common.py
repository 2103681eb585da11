"""Request parsing shared by the pages and the API."""

from __future__ import annotations

import re

from werkzeug.datastructures import FileStorage

QUOTED_FILENAME = re.compile(r'filename="([^"]*)"')


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
