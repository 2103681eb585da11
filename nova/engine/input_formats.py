"""The formats Nova recognises by their first bytes, what the engine is given for an
upload (PreparedInput), and the refusal that tells the user why an upload is not solvable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nova.engine.redaction import without_server_paths

RASTER_MAGIC = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}
RASTER_KINDS = frozenset(RASTER_MAGIC.values())
FITS_MAGIC = b"SIMPLE  ="
XISF_MAGIC = b"XISF0100"  # monolithic XISF 1.0
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
SUPPORTED_TEXT = (
    "Supported inputs: JPEG, PNG, GIF, TIFF, FITS or XISF images, star lists as a FITS table "
    "with x and y columns or as text (x y per line), optionally gzip or bzip2 compressed."
)


class UnsupportedInput(ValueError):
    """The upload is not something Nova can solve; the message tells the user why."""


def decoder_reason(exc: BaseException) -> str:
    """A decoder's message for the user: decoders name the file they read by its path on
    the server (Pillow: "cannot identify image file '/srv/...'"), which users never see."""
    return without_server_paths(str(exc))


@dataclass(frozen=True)
class HeaderSource:
    """Where the header describing an image is: the file as uploaded (decompressed), before
    any conversion for the engine (an XISF file, an fpack-compressed FITS HDU)."""

    kind: str  # fits, xisf, jpeg, png, tiff, gif or xylist
    path: Path
    fits_extension: int = 0


@dataclass(frozen=True)
class PreparedInput:
    """What the engine will be given: a raster/FITS image, or a normalised star list."""

    kind: str  # jpeg, png, gif, tiff, fits or xylist
    path: Path
    width: int
    height: int
    fits_extension: int = 0
    converted_from: HeaderSource | None = None  # set when ``path`` is a conversion

    @property
    def header_source(self) -> HeaderSource:
        return self.converted_from or HeaderSource(self.kind, self.path, self.fits_extension)

    @property
    def is_star_list(self) -> bool:
        return self.kind == "xylist"

    @property
    def y_axis_down(self) -> bool:
        """Raster formats store the top row first; FITS and star lists have y pointing up."""
        return self.kind in RASTER_KINDS


def sniff(path: Path) -> str | None:
    """Name the format of ``path`` from its first bytes, or None when unknown."""
    with path.open("rb") as handle:
        head = handle.read(16)
    for magic, kind in RASTER_MAGIC.items():
        if head.startswith(magic):
            return kind
    if head.startswith(FITS_MAGIC):
        return "fits"
    if head.startswith(XISF_MAGIC):
        return "xisf"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    return None
