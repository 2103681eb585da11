"""The members of a zip archive, read as streams into files Nova names, within the limits."""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from nova.engine.archive_limits import (
    CORRUPT_ERRORS,
    ArchiveError,
    Entry,
    Member,
    UnpackBudget,
    unpack_entries,
)

_ZIP_CD_ENTRY_MAX = 46 + 3 * 0xFFFF  # fixed part + longest name, extra field and comment


def _zip_type_problem(info: zipfile.ZipInfo) -> str | None:
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "refused: a symbolic link"
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        return "refused: a device file"
    if kind == stat.S_IFIFO:
        return "refused: a FIFO"
    if kind not in (0, stat.S_IFREG):  # 0: made on a system without Unix modes
        return "refused: not a regular file"
    if info.flag_bits & 0x1:
        return "refused: encrypted"
    return None


def _zip_precheck(path: Path, budget: UnpackBudget) -> None:
    """Refuse a zip whose central directory is too long before zipfile reads all of it."""
    find_end = getattr(zipfile, "_EndRecData", None)
    if find_end is None:  # a Python without it: zipfile's own reading still bounds memory
        return
    with path.open("rb") as handle:
        try:
            end = find_end(handle)
        except CORRUPT_ERRORS as exc:
            raise ArchiveError(f"The zip archive is corrupt: {exc}") from None
    if end is None:
        raise ArchiveError("The zip archive is corrupt: its central directory is missing.")
    entries, directory_size = int(end[zipfile._ECD_ENTRIES_TOTAL]), int(end[zipfile._ECD_SIZE])
    if entries > 2 * budget.limits.max_members:  # members and as many directories at most
        raise ArchiveError(
            f"The archive has more than {budget.limits.max_members} members "
            "(NOVA_MAX_ARCHIVE_MEMBERS)."
        )
    if directory_size > entries * _ZIP_CD_ENTRY_MAX:
        raise ArchiveError("The zip archive is corrupt: its central directory is too long.")


def zip_members(path: Path, work_dir: Path, budget: UnpackBudget) -> Iterator[Member]:
    _zip_precheck(path, budget)
    try:
        archive = zipfile.ZipFile(path)
    except (*CORRUPT_ERRORS, NotImplementedError) as exc:
        raise ArchiveError(f"The zip archive is corrupt: {exc}") from None
    with archive:
        entries = _zip_entries(archive, budget)
        yield from unpack_entries(
            entries, work_dir, budget, "The zip archive is corrupt", (NotImplementedError,)
        )


def _zip_entries(archive: zipfile.ZipFile, budget: UnpackBudget) -> Iterator[Entry]:
    for info in archive.infolist():
        if info.is_dir():
            budget.add_directory()
            continue
        open_member = partial(archive.open, info)
        problem = _zip_type_problem(info)
        yield Entry(info.filename, info.file_size, problem, open_member, info.compress_size)
