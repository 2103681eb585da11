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
import lzma
import re
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

BLOCK = 512
CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
# The compression ratio is judged only once this much has been expanded: a few kB of tar
# padding compress very well and are no bomb.
RATIO_FLOOR_BYTES = 1 << 20
# No legitimate tar header (pax or GNU long name) comes near this; tarfile reads one whole.
MAX_TAR_HEADER_READ = 8 << 20
_ZIP_CD_ENTRY_MAX = 46 + 3 * 0xFFFF  # fixed part + longest name, extra field and comment
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CORRUPT = (
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


def printable(name: str, limit: int = 200) -> str:
    """A member name safe to show and to store: no control characters, no lone surrogates."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = _CONTROL.sub("?", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _member_filename(name: str) -> str:
    return printable(name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].strip(), 256)


def _path_problem(name: str) -> str | None:
    normal = name.replace("\\", "/")
    if normal.startswith("/") or re.match(r"[A-Za-z]:", normal):
        return "refused: an absolute path"
    if ".." in normal.split("/"):
        return "refused: a path with '..'"
    if not _member_filename(name):
        return "refused: no file name"
    return None


class _Budget:
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


def _decompress(path: Path, compression: str, target: Path, budget: _Budget) -> Path:
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


def _check_compressed_member(member: Member, budget: _Budget) -> None:
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


def _copy(
    source: BinaryIO,
    target: Path,
    budget: _Budget,
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


def _too_large(budget: _Budget) -> str:
    return f"skipped: larger than {size_text(budget.limits.max_member_bytes)}"


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


def _tar_members(path: Path, work_dir: Path, budget: _Budget) -> Iterator[Member]:
    with path.open("rb") as handle:
        try:
            archive = tarfile.open(fileobj=_GuardedFile(handle), mode="r:")  # type: ignore
        except _CORRUPT as exc:
            raise ArchiveError(f"The tar archive is corrupt: {exc}") from None
        with archive:
            index = 0
            while True:
                try:
                    info = archive.next()
                except _CORRUPT as exc:
                    raise ArchiveError(f"The tar archive is corrupt: {exc}") from None
                if info is None:
                    return
                if info.isdir():
                    budget.add_directory()
                    continue
                budget.add_member()
                name, filename = printable(info.name), _member_filename(info.name)
                reason = _path_problem(info.name) or _tar_type_problem(info)
                if reason is None and info.size > budget.limits.max_member_bytes:
                    reason = _too_large(budget)
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
                        complete = _copy(stream, target, budget, name)
                except _CORRUPT as exc:
                    raise ArchiveError(f"The tar archive is corrupt: {exc}") from None
                if not complete:
                    target.unlink(missing_ok=True)
                    yield Member(name, filename, reason=_too_large(budget))
                    continue
                member = Member(name, filename, path=target)
                _check_compressed_member(member, budget)
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


def _zip_precheck(path: Path, budget: _Budget) -> None:
    """Refuse a zip whose central directory is too long before zipfile reads all of it."""
    find_end = getattr(zipfile, "_EndRecData", None)
    if find_end is None:  # a Python without it: zipfile's own reading still bounds memory
        return
    with path.open("rb") as handle:
        try:
            end = find_end(handle)
        except _CORRUPT as exc:
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


def _zip_members(path: Path, work_dir: Path, budget: _Budget) -> Iterator[Member]:
    _zip_precheck(path, budget)
    try:
        archive = zipfile.ZipFile(path)
    except (*_CORRUPT, NotImplementedError) as exc:
        raise ArchiveError(f"The zip archive is corrupt: {exc}") from None
    with archive:
        index = 0
        for info in archive.infolist():
            if info.is_dir():
                budget.add_directory()
                continue
            budget.add_member()
            name, filename = printable(info.filename), _member_filename(info.filename)
            reason = _path_problem(info.filename) or _zip_type_problem(info)
            if reason is None and info.file_size > budget.limits.max_member_bytes:
                reason = _too_large(budget)
            if reason is not None:
                yield Member(name, filename, reason=reason)
                continue
            budget.check_ratio(f"The member {name}", info.file_size, info.compress_size)
            budget.fits(info.file_size)
            index += 1
            target = work_dir / f"member-{index:04d}"
            try:
                with archive.open(info) as stream:
                    complete = _copy(stream, target, budget, name, info.compress_size)
            except NotImplementedError as exc:
                target.unlink(missing_ok=True)
                yield Member(name, filename, reason=f"skipped: {exc}")
                continue
            except _CORRUPT as exc:
                raise ArchiveError(f"The zip archive is corrupt: {exc}") from None
            if not complete:
                target.unlink(missing_ok=True)
                yield Member(name, filename, reason=_too_large(budget))
                continue
            member = Member(name, filename, path=target)
            _check_compressed_member(member, budget)
            yield member


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
    budget = _Budget(limits)
    if compression:
        path = _decompress(path, compression, work_dir / "archive", budget)
    if container == "tar":
        yield from _tar_members(path, work_dir, budget)
    else:
        yield from _zip_members(path, work_dir, budget)
