"""Batch uploads: tar and zip archives (optionally gzip- or bzip2-compressed), read safely.

An archive is recognised by its content, like every other input. Its members are read as
streams into files that Nova names itself (``member-0001`` ...) inside a temporary work
directory: nothing is ever extracted under a member's own name, and ``extractall`` is never
used. Members that could not be extracted safely anyway are refused and reported: absolute
paths, paths with ``..``, symbolic and hard links, devices, FIFOs and other special files.

Limits (see ``ArchiveLimits``) bound the number of members, the bytes unpacked and the
compression ratio of gzip/bzip2 data and of zip members (compression bombs); exceeding one
refuses the whole archive with an ``ArchiveError`` whose message names the setting.
"""

from __future__ import annotations

import bz2
import gzip
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from nova.engine.archive_limits import (
    CHUNK,
    ArchiveError,
    ArchiveLimits,
    Member,
    UnpackBudget,
)
from nova.engine.input_formats import BZIP2_MAGIC, GZIP_MAGIC
from nova.engine.tar_members import tar_members
from nova.engine.zip_members import zip_members

BLOCK = 512
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive


def _is_tar_header(block: bytes) -> bool:
    """A valid tar header block: its checksum (octal, bytes 148-155) matches its bytes."""
    if len(block) < BLOCK or block[:BLOCK].count(0) == BLOCK:
        return False
    field = block[148:156].replace(b"\0", b" ").strip()
    try:
        stored = int(field, 8)
    except ValueError:
        return False
    header = block[:148] + b" " * 8 + block[156:BLOCK]
    unsigned = sum(header)
    signed = sum(struct.unpack(f"{BLOCK}b", header))
    return stored in (unsigned, signed)


def _peek_decompressed(path: Path, compression: str) -> bytes | None:
    opener = gzip.open if compression == "gz" else bz2.open
    try:
        with opener(path, "rb") as handle:
            return handle.read(BLOCK)
    except (OSError, EOFError, ValueError, zlib.error):
        return None  # corrupt compressed data: inputs.prepare_input reports it


def detect(path: Path) -> str | None:
    """Name the archive format of ``path`` by content: tar, zip, tar.gz, tar.bz2, zip.gz,
    zip.bz2; None when it is not an archive (then it is a single image or star list)."""
    with path.open("rb") as handle:
        head: bytes | None = handle.read(BLOCK)
    compression = ""
    if head.startswith(GZIP_MAGIC):
        compression = "gz"
    elif head.startswith(BZIP2_MAGIC):
        compression = "bz2"
    if compression:
        head = _peek_decompressed(path, compression)
        if head is None:
            return None
    if head.startswith(ZIP_MAGICS):
        container = "zip"
    elif _is_tar_header(head):
        container = "tar"
    else:
        return None
    return f"{container}.{compression}" if compression else container


def _decompress(path: Path, compression: str, target: Path, budget: UnpackBudget) -> Path:
    """Expand the whole gzip/bzip2 layer around a tar or zip, within the limits."""
    opener = gzip.open if compression == "gz" else bz2.open
    compressed = path.stat().st_size
    written = 0
    try:
        with opener(path, "rb") as source, target.open("wb") as sink:
            while chunk := source.read(CHUNK):
                budget.check_time()
                written += len(chunk)
                if written > budget.limits.max_total_bytes:
                    raise ArchiveError(budget.too_large_message())
                budget.check_ratio("The archive", written, compressed)
                sink.write(chunk)
    except ArchiveError:
        raise
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        name = "gzip" if compression == "gz" else "bzip2"
        raise ArchiveError(f"The archive's {name} data is corrupt: {exc}") from None
    return target


def iter_members(path: Path, work_dir: Path, limits: ArchiveLimits) -> Iterator[Member]:
    """Yield every non-directory member of the archive at ``path`` in archive order.

    Usable members are extracted to their own file in ``work_dir`` (the caller moves or
    deletes each before asking for the next); refused ones carry a reason. Raises
    ArchiveError when the archive is corrupt or over a limit.
    """
    kind = detect(path)
    if kind is None:
        raise ArchiveError("The file is not a tar or zip archive.")
    container, _, compression = kind.partition(".")
    budget = UnpackBudget(limits)
    if compression:
        path = _decompress(path, compression, work_dir / "archive", budget)
    if container == "tar":
        yield from tar_members(path, work_dir, budget)
    else:
        yield from zip_members(path, work_dir, budget)
