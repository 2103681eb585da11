"""What unpacking an archive is bounded by and yields: the limits, the budget counting
members, bytes and time against them, the refusal (ArchiveError), the member record, and
the member checks, copy and unpacking loop that tar and zip share."""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from nova.engine.input_formats import BZIP2_MAGIC, GZIP_MAGIC

CHUNK = 1 << 20
# The compression ratio is judged only once this much has been expanded: a few kB of tar
# padding compress very well and are no bomb.
RATIO_FLOOR_BYTES = 1 << 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CORRUPT_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    UnicodeError,
)


class ArchiveError(Exception):
    """The archive as a whole is refused (corrupt, or over a limit); the message says why."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int  # NOVA_MAX_ARCHIVE_MEMBERS: files and other entries, directories apart
    max_total_bytes: int  # NOVA_MAX_ARCHIVE_BYTES: everything unpacked, together
    max_member_bytes: int  # a larger member is skipped, like a too large upload
    max_ratio: int  # NOVA_MAX_COMPRESSION_RATIO
    deadline: float | None = None  # time.monotonic() value after which unpacking stops
    time_limit: float = 0.0  # only for the message when the deadline passes


@dataclass(frozen=True)
class Member:
    """One archive member: extracted to ``path``, or skipped with ``reason``."""

    name: str  # the member's name in the archive, printable, for messages
    filename: str  # its last path component: the image's original_filename
    path: Path | None = None
    reason: str | None = None


def compression_bomb(expanded: int, compressed: int, max_ratio: int) -> bool:
    """True when ``compressed`` bytes expanding to ``expanded`` exceed NOVA_MAX_COMPRESSION_RATIO
    (judged past RATIO_FLOOR_BYTES only): the one rule for archives, gzip/bzip2 files and
    tile-compressed FITS alike."""
    return expanded > RATIO_FLOOR_BYTES and expanded > max_ratio * max(compressed, 1)


def size_text(size: int) -> str:
    return f"{size / (1 << 20):g} MB" if size >= 1 << 20 else f"{size:,} bytes"


def printable(name: str, limit: int = 200) -> str:
    """A member name safe to show and to store: no control characters, no lone surrogates."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def member_filename(name: str) -> str:
    return printable(name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].strip(), 256)


def path_problem(name: str) -> str | None:
    normal = name.replace("\\", "/")
    if normal.startswith("/") or re.match(r"[A-Za-z]:", normal):
        return "refused: an absolute path"
    if ".." in normal.split("/"):
        return "refused: a path with '..'"
    if not member_filename(name):
        return "refused: no file name"
    return None


class UnpackBudget:
    """Counts members and unpacked bytes against the limits, and watches the deadline."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limits = limits
        self.members = 0
        self.directories = 0
        self.total = 0

    def check_time(self) -> None:
        deadline = self.limits.deadline
        if deadline is not None and time.monotonic() > deadline:
            raise ArchiveError(
                f"Unpacking the archive took longer than {self.limits.time_limit:g} s."
            )

    def add_directory(self) -> None:
        self.directories += 1
        if self.directories > self.limits.max_members:
            raise ArchiveError(
                f"The archive has more than {self.limits.max_members} directories "
                "(NOVA_MAX_ARCHIVE_MEMBERS)."
            )

    def add_member(self) -> None:
        self.check_time()
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(
                f"The archive has more than {self.limits.max_members} members "
                "(NOVA_MAX_ARCHIVE_MEMBERS)."
            )

    def add_bytes(self, size: int) -> None:
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise ArchiveError(self.too_large_message())

    def fits(self, declared: int) -> None:
        if self.total + declared > self.limits.max_total_bytes:
            raise ArchiveError(self.too_large_message())

    def too_large_message(self) -> str:
        return (
            f"The archive unpacks to more than {size_text(self.limits.max_total_bytes)} "
            "(NOVA_MAX_ARCHIVE_BYTES)."
        )

    def check_ratio(self, what: str, expanded: int, compressed: int) -> None:
        ratio = self.limits.max_ratio
        if compression_bomb(expanded, compressed, ratio):
            raise ArchiveError(
                f"{what} expands more than {ratio} times (NOVA_MAX_COMPRESSION_RATIO); "
                "compression bombs are refused."
            )


def check_compressed_member(member: Member, budget: UnpackBudget) -> None:
    """A gzip/bzip2 member (say a .fits.gz) must not be a compression bomb either."""
    assert member.path is not None
    with member.path.open("rb") as handle:
        head = handle.read(3)
    if head.startswith(GZIP_MAGIC):
        opener = gzip.open
    elif head.startswith(BZIP2_MAGIC):
        opener = bz2.open
    else:
        return
    compressed = member.path.stat().st_size
    expanded = 0
    try:
        with opener(member.path, "rb") as source:
            while chunk := source.read(CHUNK):
                expanded += len(chunk)
                budget.check_ratio(f"The member {member.name}", expanded, compressed)
                if expanded > budget.limits.max_member_bytes:
                    return  # too large: prepare_input refuses the member with its reason
    except (OSError, EOFError, ValueError, zlib.error):
        return  # corrupt: prepare_input refuses the member with its reason


def copy_member(
    source: BinaryIO,
    target: Path,
    budget: UnpackBudget,
    name: str,
    compressed_size: int | None = None,
) -> bool:
    """Copy one member's stream to ``target``; False if it exceeds the per-member limit."""
    written = 0
    with target.open("wb") as sink:
        while chunk := source.read(CHUNK):
            budget.check_time()
            written += len(chunk)
            budget.add_bytes(len(chunk))
            if compressed_size is not None:
                budget.check_ratio(f"The member {name}", written, compressed_size)
            if written > budget.limits.max_member_bytes:
                return False
            sink.write(chunk)
    return True


def too_large_reason(budget: UnpackBudget) -> str:
    return f"skipped: larger than {size_text(budget.limits.max_member_bytes)}"


@dataclass(frozen=True)
class Entry:
    """One archive entry that is not a directory, as tar or zip declares it before unpacking."""

    raw_name: str  # the name as stored in the archive
    size: int  # the declared unpacked size
    type_problem: str | None  # why its kind of entry is refused (a link, a device...), if so
    open: Callable[[], BinaryIO]  # its content as a stream, closed by the caller
    compressed_size: int | None = None  # zip only: judged against NOVA_MAX_COMPRESSION_RATIO


def unpack_entries(
    entries: Iterable[Entry],
    work_dir: Path,
    budget: UnpackBudget,
    corrupt: str,
    skip_errors: tuple[type[Exception], ...] = (),
) -> Iterator[Member]:
    """Check each entry against the limits and copy the admitted ones into ``work_dir``.

    ``corrupt`` starts the ArchiveError for a read that fails ("The tar archive is corrupt");
    an error in ``skip_errors`` while opening or copying skips that one member instead.
    """
    index = 0
    for entry in entries:
        budget.add_member()
        name, filename = printable(entry.raw_name), member_filename(entry.raw_name)
        reason = path_problem(entry.raw_name) or entry.type_problem
        if reason is None and entry.size > budget.limits.max_member_bytes:
            reason = too_large_reason(budget)
        if reason is not None:
            yield Member(name, filename, reason=reason)
            continue
        if entry.compressed_size is not None:
            budget.check_ratio(f"The member {name}", entry.size, entry.compressed_size)
        budget.fits(entry.size)
        index += 1
        target = work_dir / f"member-{index:04d}"
        try:
            with entry.open() as stream:
                complete = copy_member(stream, target, budget, name, entry.compressed_size)
        except skip_errors as exc:
            target.unlink(missing_ok=True)
            yield Member(name, filename, reason=f"skipped: {exc}")
            continue
        except CORRUPT_ERRORS as exc:
            raise ArchiveError(f"{corrupt}: {exc}") from None
        if not complete:
            target.unlink(missing_ok=True)
            yield Member(name, filename, reason=too_large_reason(budget))
            continue
        member = Member(name, filename, path=target)
        check_compressed_member(member, budget)
        yield member
