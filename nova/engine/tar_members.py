"""The members of a tar archive, read as streams into files Nova names, within the limits."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

from nova.engine.archive_limits import (
    CORRUPT_ERRORS,
    ArchiveError,
    Entry,
    Member,
    UnpackBudget,
    size_text,
    unpack_entries,
)

# No legitimate tar header (pax or GNU long name) comes near this; tarfile reads one whole.
MAX_TAR_HEADER_READ = 8 << 20


class _GuardedFile:
    """The tar file for tarfile, refusing single reads far larger than any real header.

    tarfile reads a pax or GNU long-name header in one piece, whatever size it declares.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_TAR_HEADER_READ:
            raise tarfile.ReadError(f"a header larger than {size_text(MAX_TAR_HEADER_READ)}")
        return self._handle.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:
        pass  # the caller closes the real file


def tar_members(path: Path, work_dir: Path, budget: UnpackBudget) -> Iterator[Member]:
    with path.open("rb") as handle:
        try:
            archive = tarfile.open(fileobj=_GuardedFile(handle), mode="r:")  # type: ignore
        except CORRUPT_ERRORS as exc:
            raise ArchiveError(f"The tar archive is corrupt: {exc}") from None
        with archive:
            yield from unpack_entries(
                _tar_entries(archive, budget), work_dir, budget, "The tar archive is corrupt"
            )


def _tar_entries(archive: tarfile.TarFile, budget: UnpackBudget) -> Iterator[Entry]:
    """The archive's entries, read one header at a time as the unpacking asks for them."""
    while True:
        try:
            info = archive.next()
        except CORRUPT_ERRORS as exc:
            raise ArchiveError(f"The tar archive is corrupt: {exc}") from None
        if info is None:
            return
        if info.isdir():
            budget.add_directory()
            continue
        yield Entry(
            info.name, info.size, _tar_type_problem(info), partial(_tar_stream, archive, info)
        )


def _tar_stream(archive: tarfile.TarFile, info: tarfile.TarInfo) -> BinaryIO:
    stream = archive.extractfile(info)
    assert stream is not None  # a regular file always has a stream
    return stream


def _tar_type_problem(info: tarfile.TarInfo) -> str | None:
    if info.issym():
        return "refused: a symbolic link"
    if info.islnk():
        return "refused: a hard link"
    if info.ischr() or info.isblk():
        return "refused: a device file"
    if info.isfifo():
        return "refused: a FIFO"
    if info.issparse():
        return "refused: a sparse file"
    if not info.isreg():
        return "refused: not a regular file"
    return None
