"""Input recognition by content: every supported format, and clear refusals."""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from nova.engine.input_formats import UnsupportedInput, sniff
from nova.engine.inputs import prepare_input

LIMITS = {
    "max_pixels": 50_000_000,
    "max_uncompressed_bytes": 50 * 1024 * 1024,
    "max_ratio": 200,
    "max_stars": 100_000,
}


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def raster(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 10).save(buffer, format=fmt)
    return buffer.getvalue()


def fits_image(shape: tuple[int, ...] = (48, 64)) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.zeros(shape, dtype=np.int16)).writeto(buffer)
    return buffer.getvalue()


def fits_table(columns: dict[str, list[float]], header: dict[str, int] | None = None) -> bytes:
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name=name, format="D", array=np.array(values))
            for name, values in columns.items()
        ]
    )
    for key, value in (header or {}).items():
        hdu.header[key] = value
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "kind"), [("JPEG", "jpeg"), ("PNG", "png"), ("GIF", "gif"), ("TIFF", "tiff")]
)
def test_rasters_are_recognised_whatever_their_name(tmp_path: Path, fmt: str, kind: str) -> None:
    path = write(tmp_path, "upload.fits", raster(fmt))
    prepared = prepare_input(path, tmp_path, **LIMITS)
    assert (prepared.kind, prepared.width, prepared.height) == (kind, 64, 48)
    assert prepared.y_axis_down and not prepared.is_star_list


def test_fits_image_in_primary_and_in_an_extension(tmp_path: Path) -> None:
    prepared = prepare_input(write(tmp_path, "a", fits_image()), tmp_path, **LIMITS)
    assert (prepared.kind, prepared.width, prepared.height, prepared.fits_extension) == (
        "fits",
        64,
        48,
        0,
    )
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((30, 40), np.float32))]).writeto(buffer)
    prepared = prepare_input(write(tmp_path, "b", buffer.getvalue()), tmp_path, **LIMITS)
    assert (prepared.width, prepared.height, prepared.fits_extension) == (40, 30, 1)
    assert not prepared.y_axis_down


def test_fpack_compressed_fits_is_unpacked(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    data = np.arange(40 * 30, dtype=np.int16).reshape(30, 40)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(buffer)
    prepared = prepare_input(write(tmp_path, "a.fz", buffer.getvalue()), tmp_path, **LIMITS)
    assert prepared.path != tmp_path / "a.fz"
    with fits.open(prepared.path) as hdus:
        assert not isinstance(hdus[0], fits.CompImageHDU)
        assert np.array_equal(hdus[0].data, data)


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress])
def test_compressed_inputs_are_unpacked(tmp_path: Path, compress: object) -> None:
    path = write(tmp_path, "a.png", compress(raster("PNG")))  # type: ignore[operator]
    assert sniff(path) in ("gzip", "bzip2")
    assert prepare_input(path, tmp_path, **LIMITS).kind == "png"


@pytest.mark.parametrize(
    "columns",
    [["X", "Y", "MAG_AUTO"], ["X", "Y", "FLUX"], ["x", "y"], ["X_IMAGE", "Y_IMAGE"]],
)
def test_fits_star_lists_with_any_column_case(tmp_path: Path, columns: list[str]) -> None:
    values = {columns[0]: [10.0, 20.5, 30.0], columns[1]: [5.0, 15.0, 40.2]}
    for extra in columns[2:]:
        values[extra] = [1.0, 2.0, 3.0]
    prepared = prepare_input(write(tmp_path, "list", fits_table(values)), tmp_path, **LIMITS)
    assert prepared.kind == "xylist" and prepared.is_star_list
    assert (prepared.width, prepared.height) == (30, 41)  # ceil of the largest x and y
    with fits.open(prepared.path) as hdus:
        assert list(hdus[1].data["X"]) == [10.0, 20.5, 30.0]  # order kept: brightest first


def test_star_list_size_from_header_or_parameters(tmp_path: Path) -> None:
    data = fits_table({"X": [1.0, 2.0], "Y": [3.0, 4.0]}, {"IMAGEW": 800, "IMAGEH": 600})
    prepared = prepare_input(write(tmp_path, "l", data), tmp_path, **LIMITS)
    assert (prepared.width, prepared.height) == (800, 600)
    prepared = prepare_input(
        write(tmp_path, "l", data), tmp_path, image_width=1000, image_height=700, **LIMITS
    )
    assert (prepared.width, prepared.height) == (1000, 700)


def test_text_star_lists(tmp_path: Path) -> None:
    text = b"# X Y\n10 20\n30.5, 40\n\n50 60 7.5\n"
    prepared = prepare_input(write(tmp_path, "stars.txt", text), tmp_path, **LIMITS)
    assert (prepared.kind, prepared.width, prepared.height) == ("xylist", 50, 60)
    with fits.open(prepared.path) as hdus:
        assert list(hdus[1].data["Y"]) == [20.0, 40.0, 60.0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"%PDF-1.4 not a sky picture", "This file's type is not supported."),
        (b"\x00\x01\x02binary junk", "This file's type is not supported."),
        (b"x y\n1 2\nthree four\n", "This file's type is not supported."),
        (b"A note\non the\nobservation\nof 1 2\n10 20\n", "This file's type is not supported."),
        (raster("JPEG")[:60], "could not be decoded"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "could not be decoded"),
        (fits_table({"RA": [1.0], "DEC": [2.0]}), "neither an image nor a table"),
        (fits_image((1, 64)), "only 64x1 pixels"),
        (b"SIMPLE  =                    T" + b" " * 50, "shorter than one header block"),
        (gzip.compress(b"plain text that is no star list"), "not supported"),
        (gzip.compress(gzip.compress(raster("PNG"))), "Nested compression"),
        (gzip.compress(raster("PNG"))[:40], "corrupt"),
        (fits_table({"X": [float("nan")], "Y": [1.0]}), "no finite"),
        (fits_table({"X": [-5.0], "Y": [1.0]}), "negative"),
    ],
)
def test_unsupported_inputs_get_a_clear_message(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(UnsupportedInput) as caught:
        prepare_input(write(tmp_path, "upload.jpg", data), tmp_path, **LIMITS)
    assert message in str(caught.value)


def test_pixel_and_expansion_limits(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedInput, match="the limit is 1,000"):
        prepare_input(
            write(tmp_path, "a", raster("PNG")),
            tmp_path,
            **(LIMITS | {"max_pixels": 1000, "max_uncompressed_bytes": 10**6}),
        )
    with pytest.raises(UnsupportedInput, match="expands to more than"):
        prepare_input(
            write(tmp_path, "b", gzip.compress(b"0 0\n" * 600_000)),
            tmp_path,
            **(LIMITS | {"max_pixels": 10**6, "max_uncompressed_bytes": 1 << 20}),
        )


# -- bounds on what decoding may cost (issue 16: H1, H2, L7) ------------------------------------


def fpack(data: np.ndarray) -> bytes:
    """Tile-compressed FITS; gzip tiles of 1000 rows pack zeros the tightest."""
    hdu = fits.CompImageHDU(data, compression_type="GZIP_1", tile_shape=(1000, data.shape[1]))
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


def test_a_tile_compressed_bomb_is_refused_before_it_is_unpacked(tmp_path: Path) -> None:
    """4000x4000 zeros pack into a few kB: far over the ratio limit, refused from the header."""
    bomb = fpack(np.zeros((4000, 4000), dtype=np.int16))
    assert len(bomb) < 200_000
    with pytest.raises(UnsupportedInput, match="expands more than 200 times"):
        prepare_input(write(tmp_path, "bomb.fz", bomb), tmp_path, **LIMITS)
    assert not (tmp_path / "unpacked.fits").exists()
    # The byte limit holds on its own too.
    with pytest.raises(UnsupportedInput, match="expands to more than 1 MB"):
        prepare_input(
            write(tmp_path, "b.fz", fpack(np.zeros((1000, 1000), dtype=np.int16))),
            tmp_path,
            **(LIMITS | {"max_uncompressed_bytes": 1 << 20, "max_ratio": 10**6}),
        )


def test_a_cube_counts_all_its_planes_against_the_pixel_limit(tmp_path: Path) -> None:
    cube = fits_image((50, 200, 200))  # 50 planes of 200x200: 2,000,000 pixels
    with pytest.raises(UnsupportedInput, match="limit is 1,000,000 for all its planes"):
        prepare_input(write(tmp_path, "cube", cube), tmp_path, **(LIMITS | {"max_pixels": 10**6}))
    four_axes = fits_image((2, 2, 20, 20))
    with pytest.raises(UnsupportedInput, match="at most 3"):
        prepare_input(write(tmp_path, "4d", four_axes), tmp_path, **LIMITS)
    small = prepare_input(write(tmp_path, "small", fits_image((3, 48, 64))), tmp_path, **LIMITS)
    assert (small.width, small.height) == (64, 48)


def test_a_fits_file_shorter_than_its_header_says_is_refused(tmp_path: Path) -> None:
    data = fits_image((480, 640))
    with pytest.raises(UnsupportedInput, match="truncated"):
        prepare_input(write(tmp_path, "cut", data[: len(data) // 2]), tmp_path, **LIMITS)


def test_a_header_of_too_many_cards_is_refused_unparsed(tmp_path: Path) -> None:
    hdu = fits.PrimaryHDU(np.zeros((8, 8), dtype=np.int16))
    for number in range(25_000):
        hdu.header.add_history(f"step {number}")
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    packed = gzip.compress(buffer.getvalue())
    with pytest.raises(UnsupportedInput, match="more than 20,000 cards"):
        prepare_input(
            write(tmp_path, "cards.gz", packed), tmp_path, **(LIMITS | {"max_ratio": 10**6})
        )


def test_single_compressed_files_are_held_to_the_compression_ratio(tmp_path: Path) -> None:
    """NOVA_MAX_COMPRESSION_RATIO applies to a lone .fits.bz2 as to archives (L7)."""
    image = fits_image((2000, 2000))  # 8 MB of zeros: bzip2 packs it into ~100 bytes
    for name, packed in (("bz2", bz2.compress(image)), ("gz", gzip.compress(image))):
        with pytest.raises(UnsupportedInput, match="expands more than 200 times"):
            prepare_input(write(tmp_path, f"x.{name}", packed), tmp_path, **LIMITS)


def test_star_lists_are_held_to_the_star_limit(tmp_path: Path) -> None:
    """A text list of 200,000 lines is refused by counting lines, never parsed (H2)."""
    text = b"1 1\n" * 200_000
    with pytest.raises(UnsupportedInput, match="limit is 100,000 stars"):
        prepare_input(write(tmp_path, "l.gz", gzip.compress(text)), tmp_path, **LIMITS)
    table = fits_table({"X": [1.0] * 2000, "Y": [2.0] * 2000})
    with pytest.raises(UnsupportedInput, match="2,000 rows; the limit is 1,000"):
        prepare_input(write(tmp_path, "t", table), tmp_path, **(LIMITS | {"max_stars": 1000}))
