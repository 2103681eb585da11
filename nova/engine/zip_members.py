"""The members of a zip archive, read as streams into files Nova names, within the limits."""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

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
    too_large_reason,
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
        index = 0
        for info in archive.infolist():
            if info.is_dir():
                budget.add_directory()
                continue
            budget.add_member()
            name, filename = printable(info.filename), member_filename(info.filename)
            reason = path_problem(info.filename) or _zip_type_problem(info)
            if reason is None and info.file_size > budget.limits.max_member_bytes:
                reason = too_large_reason(budget)
            if reason is not None:
                yield Member(name, filename, reason=reason)
                continue
            budget.check_ratio(f"The member {name}", info.file_size, info.compress_size)
            budget.fits(info.file_size)
            index += 1
            target = work_dir / f"member-{index:04d}"
            try:
                with archive.open(info) as stream:
                    complete = copy_member(stream, target, budget, name, info.compress_size)
            except NotImplementedError as exc:
                target.unlink(missing_ok=True)
                yield Member(name, filename, reason=f"skipped: {exc}")
                continue
            except CORRUPT_ERRORS as exc:
                raise ArchiveError(f"The zip archive is corrupt: {exc}") from None
            if not complete:
                target.unlink(missing_ok=True)
                yield Member(name, filename, reason=too_large_reason(budget))
                continue
            member = Member(name, filename, path=target)
            check_compressed_member(member, budget)
            yield member
