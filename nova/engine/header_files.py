"""Reading a prepared upload's header for its hints: the only file access of the hints, the
header alone (never the pixels), bounded, so that a sandbox can run it as it runs the input
readers.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from astropy.io import fits

from nova.engine.header_hints import cards_from_header, from_exif, from_fits_cards, from_xisf
from nova.engine.hints import MAX_HEADER_CARDS, HeaderHints
from nova.engine.input_formats import HeaderSource, PreparedInput
from nova.engine.xisf_input import MAX_XISF_HEADER_BYTES, check_xisf_header_size

log = logging.getLogger(__name__)


def read_prepared(prepared: PreparedInput) -> tuple[HeaderHints | None, list[str]]:
    """The hints in a prepared upload's header, and a note when it cannot be read: a
    hostile header never fails the solve."""
    try:
        return read_header(prepared.header_source, prepared.width, prepared.height), []
    except Exception as exc:
        log.warning("reading the header's hints failed: %s", exc)
        return None, [f"The header could not be read: {str(exc)[:200]}"]


def read_header(source: HeaderSource, width: int, height: int) -> HeaderHints | None:
    """The hints in the header of an input as it was uploaded (before any conversion), or
    None when its kind carries none. Reads only the header, never the pixels."""
    if source.kind == "fits":
        with fits.open(source.path, memmap=True, lazy_load_hdus=True) as hdus:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cards = cards_from_header(hdus[source.fits_extension].header)
        return from_fits_cards(cards, width, height)
    if source.kind == "xisf":
        keywords, properties = read_xisf_header(source.path)
        return from_xisf(keywords, properties, width, height)
    if source.kind in ("jpeg", "tiff", "png"):
        from PIL import Image as PILImage

        with PILImage.open(source.path) as image:
            exif = image.getexif()
            tags: dict[int, Any] = dict(list(exif.items())[:MAX_HEADER_CARDS])
            tags.update(list(exif.get_ifd(EXIF_IFD).items())[:MAX_HEADER_CARDS])
        return from_exif(tags, width, height) if tags else None
    return None


EXIF_IFD = 0x8769


def read_xisf_header(path: Path) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """The first image's FITSKeyword (name, value) pairs and Property values of an XISF
    file, from its XML header (bounded to MAX_XISF_HEADER_BYTES)."""
    from xisf import XISF

    check_xisf_header_size(path, MAX_XISF_HEADER_BYTES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = XISF(str(path)).get_images_metadata()
    if not images:
        return [], {}
    image = images[0]
    keywords = [
        (str(name).upper(), entries[0].get("value"))
        for name, entries in list(image.get("FITSKeywords", {}).items())[:MAX_HEADER_CARDS]
        if entries
    ]
    properties = {
        str(name): entry.get("value")
        for name, entry in list(image.get("XISFProperties", {}).items())[:MAX_HEADER_CARDS]
        if isinstance(entry, dict)
    }
    return keywords, properties
