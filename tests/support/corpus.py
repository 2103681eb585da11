"""A corpus of broken and hostile files: every kind nova accepts, cut, lying, or built to
exhaust memory, disk or the decoder (compression and archive bombs, unsafe archive members)."""

from __future__ import annotations

import bz2
import gzip
import io
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from astropy.io import fits
from PIL import Image

MB = 1 << 20


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but holds almost no data (a few dozen bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def raster(fmt: str, size: tuple[int, int] = (200, 150)) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8)).save(
        buffer, format=fmt
    )
    return buffer.getvalue()


def fits_card(key: str, value: str) -> bytes:
    return f"{key:<8}= {value:>20}".ljust(80).encode()


def fits_header(cards: list[tuple[str, str]], end: bool = True) -> bytes:
    text = b"".join(fits_card(k, v) for k, v in cards) + (b"END".ljust(80) if end else b"")
    return text.ljust(-(-len(text) // 2880) * 2880 or 2880, b" ")


def fits_image(shape: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.zeros(shape, dtype=np.int16)).writeto(buffer)
    return buffer.getvalue()


def fits_table(x: list[float], y: list[float], **header: int) -> bytes:
    buffer = io.BytesIO()
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="X", format="D", array=x), fits.Column(name="Y", format="D", array=y)]
    )
    table.header.update(header)
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    return buffer.getvalue()


def gzip_bomb(expanded: int) -> bytes:
    """Concatenated gzip members of zeros: ~1 kB per MB expanded (multi-member is valid gzip)."""
    return gzip.compress(b"\0" * MB, 9) * (expanded // MB)


def bzip2_bomb(expanded: int) -> bytes:
    return bz2.compress(b"\0" * MB, 9) * (expanded // MB)


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def tar_entry(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def zip_of(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: the mode lives in the high 16 bits
    info.external_attr = (0o120777) << 16
    return info


def zip_overlapping(members: int, size: int) -> bytes:
    """One compressed member referenced by many central-directory entries (overlap bomb)."""
    data = zip_of([("m", b"\0" * size)])
    end = data.rindex(b"PK\x05\x06")
    cd_offset = struct.unpack("<I", data[end + 16 : end + 20])[0]
    entry = data[cd_offset:end]
    directory = entry * members
    eocd = bytearray(data[end:])
    struct.pack_into("<HHII", eocd, 8, members, members, len(directory), cd_offset)
    return data[:cd_offset] + directory + bytes(eocd)


def text_list(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def file_corpus(apod: Path) -> dict[str, bytes]:
    jpeg = (apod / "apod4.jpg").read_bytes()
    png = raster("PNG")
    tiff = raster("TIFF")
    gif = raster("GIF")
    rng = np.random.default_rng(11)
    corpus: dict[str, bytes] = {
        "zero-byte": b"",
        "one-byte": b"\xff",
        "jpeg-magic-only": b"\xff\xd8\xff",
        "png-magic-only": b"\x89PNG\r\n\x1a\n",
        "fits-magic-only": b"SIMPLE  =",
        "gzip-magic-only": b"\x1f\x8b",
        "bzip2-magic-only": b"BZh",
        "random-64k": rng.bytes(65536),
        "html": b"<html><script>alert(1)</script></html>",
        "prose": b"The quick brown fox\njumps over the lazy dog\nthree\nfour\nfive\n",
        "utf16-text": "1 2\n3 4\n".encode("utf-16"),
    }
    for cut in (20, 200, 2000, 20000, len(jpeg) // 2, len(jpeg) - 100):
        corpus[f"jpeg-truncated-{cut}"] = jpeg[:cut]
    for offset in (300, 5000, len(jpeg) // 3):
        broken = bytearray(jpeg)
        broken[offset : offset + 4000] = rng.bytes(4000)
        corpus[f"jpeg-corrupt-at-{offset}"] = bytes(broken)
    corpus["jpeg-huge-dimensions"] = jpeg[:2] + jpeg[2:].replace(
        b"\xff\xc0\x00\x11\x08", b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff", 1
    )
    for cut in (10, 30, 60, len(png) // 2, len(png) - 13):
        corpus[f"png-truncated-{cut}"] = png[:cut]
    corpus["png-bad-crc"] = png[:29] + b"\0\0\0\0" + png[33:]
    corpus["png-100000x100000-header-only"] = png_header_only(100_000, 100_000)
    corpus["png-14000x14000-header-only"] = png_header_only(14_000, 14_000)
    corpus["png-0x0"] = png_header_only(0, 0)
    corpus["png-1x1"] = raster("PNG", (1, 1))
    corpus["tiff-truncated"] = tiff[: len(tiff) // 3]
    corpus["gif-truncated"] = gif[: len(gif) // 3]
    image = fits_image()
    for cut in (80, 2880, len(image) - 1000):
        corpus[f"fits-truncated-{cut}"] = image[:cut]
    base = [("SIMPLE", "T"), ("BITPIX", "16")]
    for name, cards in {
        "naxis-999": [("NAXIS", "999")],
        "naxis-negative": [("NAXIS", "-2")],
        "naxis1-huge": [("NAXIS", "2"), ("NAXIS1", "100000"), ("NAXIS2", "100000")],
        "naxis1-1e12": [("NAXIS", "2"), ("NAXIS1", "1000000000000"), ("NAXIS2", "2")],
        "naxis1-negative": [("NAXIS", "2"), ("NAXIS1", "-64"), ("NAXIS2", "64")],
        "naxis1-text": [("NAXIS", "2"), ("NAXIS1", "'abc'"), ("NAXIS2", "64")],
        "naxis-3-cube": [("NAXIS", "3"), ("NAXIS1", "5000"), ("NAXIS2", "5000"), ("NAXIS3", "99")],
        "under-limit-no-data": [("NAXIS", "2"), ("NAXIS1", "14000"), ("NAXIS2", "14000")],
    }.items():
        corpus[f"fits-{name}"] = fits_header(base + cards)
    corpus["fits-bitpix-7"] = fits_header(
        [("SIMPLE", "T"), ("BITPIX", "7"), ("NAXIS", "2"), ("NAXIS1", "8"), ("NAXIS2", "8")]
    )
    corpus["fits-no-end"] = fits_header(base + [("NAXIS", "0")], end=False)
    corpus["fits-empty-primary"] = fits_header(base + [("NAXIS", "0")])
    corpus["fits-table-no-xy"] = fits_table([1.0, 2.0], [3.0, 4.0]).replace(
        b"TTYPE1  = 'X", b"TTYPE1  = 'Q"
    )
    corpus["fits-table-nan"] = fits_table([float("nan")] * 5, [float("nan")] * 5)
    corpus["fits-table-inf"] = fits_table([float("inf"), 1.0], [2.0, float("-inf")])
    corpus["fits-table-empty"] = fits_table([], [])
    corpus["fits-table-imagew-huge"] = fits_table([1.0, 2.0, 3.0], [1.0, 5.0, 3.0], IMAGEW=10**15)
    corpus["fits-table-negative"] = fits_table([-5.0, 10.0, 20.0], [3.0, -4.0, 8.0])
    # Star lists as text.
    corpus["stars-nan"] = text_list(["nan nan"] * 20)
    corpus["stars-inf"] = text_list(["inf 5", "5 -inf", "1e999 1e999"])
    corpus["stars-huge-values"] = text_list(["1e308 1e308", "1.7e308 1e300", "5 5"])
    corpus["stars-negative"] = text_list(["-1 -1", "-100 5"])
    corpus["stars-one-column"] = text_list(["1", "2", "3"])
    corpus["stars-zero-span"] = text_list(["0 0", "0 0", "0.5 0.5"])
    corpus["stars-200k"] = text_list([f"{i % 997}.5 {i % 991}.5" for i in range(200_000)])
    corpus["stars-long-line"] = b"1 2 " + b"3 " * 500_000 + b"\n"
    # Compression bombs and broken compressed data.
    corpus["gzip-bomb-300mb"] = gzip_bomb(300 * MB)
    corpus["bzip2-bomb-300mb"] = bzip2_bomb(300 * MB)
    corpus["gzip-of-gzip"] = gzip.compress(gzip.compress(png))
    corpus["gzip-truncated"] = gzip.compress(png)[:-30]
    corpus["gzip-bad-crc"] = gzip.compress(png)[:-8] + b"\0" * 8
    corpus["bzip2-truncated"] = bz2.compress(png)[: len(bz2.compress(png)) // 2]
    corpus["gzip-of-garbage"] = gzip.compress(rng.bytes(5000))
    # Archives: bombs, traversal, links, devices, corruption.
    corpus["zip-ratio-bomb"] = zip_of([("zeros.fits", b"\0" * (20 * MB))])
    corpus["zip-overlap-bomb"] = zip_overlapping(300, 5 * MB)
    corpus["zip-too-many-members"] = zip_of([(f"m{i}.txt", b"1 2\n") for i in range(400)])
    corpus["zip-traversal"] = zip_of([("../../../../tmp/evil.png", png)])
    corpus["zip-absolute"] = zip_of([("/etc/evil.png", png)])
    corpus["zip-symlink"] = zip_of([(zip_symlink("link.png"), b"/etc/passwd")])
    corpus["zip-truncated"] = zip_of([("a.png", png)])[:-30]
    corpus["zip-empty"] = zip_of([])
    corpus["zip-nested-zip"] = zip_of([("inner.zip", zip_of([("a.png", png)]))])
    tar_cases: dict[str, list[tuple[tarfile.TarInfo, bytes]]] = {
        "traversal": [(tar_entry("../../../../tmp/evil.png"), png)],
        "absolute": [(tar_entry("/tmp/evil.png"), png)],
        "symlink": [(tar_entry("link.png", tarfile.SYMTYPE, linkname="/etc/passwd"), b"")],
        "symlink-relative": [(tar_entry("up.png", tarfile.SYMTYPE, linkname="../../x"), b"")],
        "hardlink": [(tar_entry("hard.png", tarfile.LNKTYPE, linkname="/etc/shadow"), b"")],
        "char-device": [(tar_entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3), b"")],
        "block-device": [(tar_entry("sda", tarfile.BLKTYPE, devmajor=8, devminor=0), b"")],
        "fifo": [(tar_entry("pipe", tarfile.FIFOTYPE), b"")],
        "all-unsafe": [
            (tar_entry("../a.png"), png),
            (tar_entry("b.png", tarfile.SYMTYPE, linkname="/etc/passwd"), b""),
            (tar_entry("c", tarfile.CHRTYPE, devmajor=1, devminor=5), b""),
        ],
        "setuid-file": [(tar_entry("suid.png", mode=0o4755), b"garbage")],
    }
    for name, entries in tar_cases.items():
        corpus[f"tar-{name}"] = tar_of(entries)
        corpus[f"tar.gz-{name}"] = gzip.compress(tar_of(entries))
    corpus["tar-truncated"] = tar_of([(tar_entry("a.png"), png)])[:700]
    corpus["tar-member-bomb"] = gzip.compress(
        tar_of([(tar_entry("zeros.fits"), b"\0" * (30 * MB))]), 1
    )
    corpus["tar.bz2-too-many"] = bz2.compress(
        tar_of([(tar_entry(f"m{i}.txt"), b"1 2\n") for i in range(300)])
    )
    return corpus
