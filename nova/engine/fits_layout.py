"""The layout of a FITS file read from its raw header cards, before any FITS library sees it.

astropy trusts what a header says: a header of millions of cards is parsed whole, a
tile-compressed (fpack) image of 14000 x 14000 pixels is decompressed whole, a cube's third
axis multiplies its size unseen. ``read_layout`` walks the header-data units by reading
80-byte cards only, bounded in cards and units, and gives every unit's declared shape and
size, so that limits on pixels, axes, bytes and compression ratio can be applied first.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from pathlib import Path

BLOCK = 2880
CARD = 80
# Real headers hold tens to a few thousand cards (long HISTORY included); a header past this
# is an attack on the parser (astropy keeps every card as an object).
MAX_HEADER_CARDS = 20_000
MAX_UNITS = 1000
MAX_AXES = 999  # the FITS standard's own bound


class FitsLayoutError(ValueError):
    """The FITS structure is malformed or over a limit; the message says what for the user."""


@dataclass(frozen=True)
class Unit:
    """One header-data unit as its header declares it."""

    index: int
    xtension: str  # "" for the primary unit, else IMAGE, BINTABLE, TABLE, ...
    bitpix: int
    axes: tuple[int, ...]  # NAXIS1, NAXIS2, ...
    data_offset: int
    data_bytes: int  # without the padding to a whole block
    compressed_axes: tuple[int, ...] = ()  # ZNAXISn of a tile-compressed image
    compressed_bitpix: int = 0

    @property
    def is_compressed_image(self) -> bool:
        return bool(self.compressed_axes)

    @property
    def image_axes(self) -> tuple[int, ...]:
        """The image's axes: ZNAXISn when tile-compressed, NAXISn for an image unit."""
        return self.compressed_axes if self.is_compressed_image else self.axes

    @property
    def pixels(self) -> int:
        return prod(self.image_axes) if self.image_axes else 0

    @property
    def uncompressed_bytes(self) -> int:
        """What the image takes once unpacked."""
        if self.is_compressed_image:
            return self.pixels * max(1, abs(self.compressed_bitpix) // 8)
        return self.data_bytes

    @property
    def end(self) -> int:
        padded = -(-self.data_bytes // BLOCK) * BLOCK
        return self.data_offset + padded


def _value(card: bytes) -> str | None:
    """The value of a ``KEY     = value / comment`` card, as text (None: no value)."""
    if card[8:10] != b"= ":
        return None
    text = card[10:].decode("ascii", "replace").strip()
    if text.startswith("'"):
        end = text.find("'", 1)
        return text[1:end].strip() if end > 0 else text[1:].strip()
    return text.split("/", 1)[0].strip()


def _integer(cards: dict[str, str], key: str, default: int | None = None) -> int:
    raw = cards.get(key)
    if raw is None:
        if default is None:
            raise FitsLayoutError(f"The FITS header has no {key} card.")
        return default
    try:
        return int(raw)
    except ValueError:
        raise FitsLayoutError(f"The FITS header's {key} is not an integer: {raw[:20]!r}.") from None


def _read_header(handle, offset: int, index: int) -> tuple[dict[str, str], int]:  # type: ignore[no-untyped-def]
    """The cards of the header at ``offset`` (keyword -> value text) and where its data starts."""
    handle.seek(offset)
    cards: dict[str, str] = {}
    count = 0
    while True:
        block = handle.read(BLOCK)
        if len(block) < BLOCK:
            what = "primary header" if index == 0 else f"header of extension {index}"
            raise FitsLayoutError(f"The FITS file ends inside its {what} (no END card).")
        for start in range(0, BLOCK, CARD):
            card = block[start : start + CARD]
            key = card[:8].decode("ascii", "replace").strip()
            if key == "END":
                return cards, handle.tell()
            count += 1
            if count > MAX_HEADER_CARDS:
                raise FitsLayoutError(
                    f"A FITS header has more than {MAX_HEADER_CARDS:,} cards; that many are "
                    "not read."
                )
            value = _value(card)
            if value is not None and key not in cards:
                cards[key] = value


def _axes(cards: dict[str, str], prefix: str) -> tuple[int, ...]:
    count = _integer(cards, prefix)
    if not 0 <= count <= MAX_AXES:
        raise FitsLayoutError(f"The FITS header's {prefix} of {count} is not 0 to {MAX_AXES}.")
    axes = tuple(_integer(cards, f"{prefix}{n}") for n in range(1, count + 1))
    if any(axis < 0 for axis in axes):
        raise FitsLayoutError(f"The FITS header declares a negative axis length ({prefix}n).")
    return axes


def read_layout(path: Path) -> list[Unit]:
    """Every unit of the FITS file at ``path``; raises FitsLayoutError.

    Trailing bytes after the last whole unit (some writers pad, some append junk) are
    ignored, as astropy does; a unit whose data runs past the end of the file is refused.
    """
    size = path.stat().st_size
    units: list[Unit] = []
    offset = 0
    with path.open("rb") as handle:
        while offset + BLOCK <= size:
            index = len(units)
            if index >= MAX_UNITS:
                raise FitsLayoutError(f"The FITS file has more than {MAX_UNITS} extensions.")
            if index > 0:
                handle.seek(offset)
                if not handle.read(8).startswith(b"XTENSION"):
                    break  # not another unit: trailing bytes
            cards, data_offset = _read_header(handle, offset, index)
            bitpix = _integer(cards, "BITPIX")
            if bitpix not in (8, 16, 32, 64, -32, -64):
                raise FitsLayoutError(f"The FITS header's BITPIX of {bitpix} is not valid.")
            axes = _axes(cards, "NAXIS")
            pcount = _integer(cards, "PCOUNT", 0)
            gcount = _integer(cards, "GCOUNT", 1)
            if pcount < 0 or gcount < 0:
                raise FitsLayoutError("The FITS header declares a negative PCOUNT or GCOUNT.")
            if not axes:
                data_bytes = 0
            else:
                # Random groups (NAXIS1 = 0) count their axes from the second one.
                counted = axes[1:] if axes[0] == 0 and index == 0 else axes
                data_bytes = abs(bitpix) // 8 * gcount * (pcount + prod(counted))
            compressed_axes: tuple[int, ...] = ()
            compressed_bitpix = 0
            if cards.get("ZIMAGE", "").upper() == "T":
                compressed_axes = _axes(cards, "ZNAXIS")
                compressed_bitpix = _integer(cards, "ZBITPIX")
            unit = Unit(
                index=index,
                xtension=cards.get("XTENSION", "").upper() if index > 0 else "",
                bitpix=bitpix,
                axes=axes,
                data_offset=data_offset,
                data_bytes=data_bytes,
                compressed_axes=compressed_axes,
                compressed_bitpix=compressed_bitpix,
            )
            if data_offset + data_bytes > size:
                where = "primary unit" if index == 0 else f"extension {index}"
                raise FitsLayoutError(
                    f"The FITS file is truncated: its {where} declares {data_bytes:,} bytes of "
                    f"data, and only {max(0, size - data_offset):,} follow."
                )
            units.append(unit)
            offset = unit.end
    if not units:
        raise FitsLayoutError("The FITS file is shorter than one header block.")
    return units
