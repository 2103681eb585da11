"""The members of a tar archive, read as streams into files Nova names, within the limits."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from nova.engine.archive_limits import (
    CORRUPT_ERRORS,
    ArchiveError,
    Member,
    UnpackBudget,
    check_compressed_member,
    copy_member,
    member_filename,
    path_problem,
    printable,
    size_text,
    too_large_reason,
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
            index = 0
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
                budget.add_member()
                name, filename = printable(info.name), member_filename(info.name)
                reason = path_problem(info.name) or _tar_type_problem(info)
                if reason is None and info.size > budget.limits.max_member_bytes:
                    reason = too_large_reason(budget)
                if reason is not None:
                    yield Member(name, filename, reason=reason)
                    continue
                budget.fits(info.size)
                index += 1
                target = work_dir / f"member-{index:04d}"
                try:
                    stream = archive.extractfile(info)
                    assert stream is not None  # a regular file always has a stream
                    with stream:
                        complete = copy_member(stream, target, budget, name)
                except CORRUPT_ERRORS as exc:
                    raise ArchiveError(f"The tar archive is corrupt: {exc}") from None
                if not complete:
                    target.unlink(missing_ok=True)
                    yield Member(name, filename, reason=too_large_reason(budget))
                    continue
                member = Member(name, filename, path=target)
                check_compressed_member(member, budget)
                yield member


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
