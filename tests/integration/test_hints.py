"""Hints from the file's own header: FITS (N.I.N.A., SGP, an old WCS), XISF and EXIF.

The FITS frames are the sample photos' pixels with headers made from their known solution
(each photo is solved once here, with a scale hint, by solve-field): the header's optics
give the solved pixel scale, its pointing the solved centre.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from flask.testing import FlaskClient
from PIL import Image, TiffImagePlugin
from xisf import XISF

from nova.engine import header_hints, hints
from nova.engine.params import SolveParams, parse_solve_params
from tests.integration.test_solve_apod import APOD_CENTRES, angular_distance, finished_job, upload
from tests.support.api import api_call
from tests.support.processes import run_worker

PIXEL_UM = 3.76  # an IMX571 sensor (ZWO ASI2600), as N.I.N.A. writes it


# -- the header readers alone (pure functions) ----------------------------------------------


def test_nina_style_cards_give_scale_and_position() -> None:
    cards = [
        ("IMAGETYP", "LIGHT"),
        ("XBINNING", 1),
        ("XPIXSZ", 3.76),
        ("YPIXSZ", 3.76),
        ("FOCALLEN", 530.0),
        ("RA", 83.8221),
        ("DEC", -5.3911),
        ("OBJCTRA", "05 35 17"),
        ("OBJCTDEC", "-05 23 28"),
    ]
    found = header_hints.from_fits_cards(cards, 6248, 4176)
    expected = 206.264806 * 3.76 / 530.0
    assert found.scale is not None and found.position is not None
    assert found.scale.lower == pytest.approx(expected * 0.9)
    assert found.scale.upper == pytest.approx(expected * 1.1)
    assert found.scale.keywords == ("FOCALLEN", "XPIXSZ", "XBINNING")
    assert (found.position.ra, found.position.dec) == (83.8221, -5.3911)
    assert found.position.keywords == ("RA", "DEC")
    assert found.notes == ()


def test_sgp_style_sexagesimal_and_binning_ambiguity() -> None:
    cards = [("OBJCTRA", "05 35 17.3"), ("OBJCTDEC", "-05 23 28"), ("FOCALLEN", 1000),
             ("XPIXSZ", 7.52), ("XBINNING", 2)]  # fmt: skip
    found = header_hints.from_fits_cards(cards, 3000, 2000)
    assert found.position is not None
    assert found.position.ra == pytest.approx((5 + 35 / 60 + 17.3 / 3600) * 15)
    assert found.position.dec == pytest.approx(-(5 + 23 / 60 + 28 / 3600))
    # XPIXSZ may be the binned or the unbinned pixel: the range holds both readings.
    unbinned = 206.264806 * 7.52 / 1000
    assert found.scale is not None
    assert found.scale.lower == pytest.approx(unbinned * 0.9)
    assert found.scale.upper == pytest.approx(2 * unbinned * 1.1)


def test_explicit_arcsec_per_pixel_keyword_wins_over_optics() -> None:
    found = header_hints.from_fits_cards(
        [("PIXSCALE", 1.25), ("FOCALLEN", 100), ("XPIXSZ", 5)], 100, 100
    )
    assert found.scale is not None and found.scale.keywords == ("PIXSCALE",)
    assert found.scale.lower < 1.25 < found.scale.upper


@pytest.mark.parametrize(
    ("cards", "ignored"),
    [
        ([("FOCALLEN", -500.0), ("XPIXSZ", 3.8)], "FOCALLEN"),
        ([("FOCALLEN", float("nan")), ("XPIXSZ", 3.8)], "FOCALLEN"),
        ([("FOCALLEN", "long"), ("XPIXSZ", 3.8)], "FOCALLEN"),
        ([("FOCALLEN", 1e308), ("XPIXSZ", 3.8)], "FOCALLEN"),
        ([("FOCALLEN", 500.0), ("XPIXSZ", float("inf"))], "XPIXSZ"),
        ([("PIXSCALE", 1e308)], "PIXSCALE"),
        ([("RA", 400.0), ("DEC", 10.0)], "RA"),
        ([("RA", 10.0), ("DEC", -91.0)], "DEC"),
        ([("OBJCTRA", "25 99 99"), ("OBJCTDEC", "+10 00 00")], "OBJCTRA"),
        ([("RA", True), ("DEC", 10.0)], "RA"),
    ],
)
def test_hostile_values_are_ignored_with_a_note(cards: list, ignored: str) -> None:
    found = header_hints.from_fits_cards(cards, 1000, 800)
    assert found.scale is None and found.position is None
    assert any(note.startswith(ignored) for note in found.notes), found.notes


def test_a_singular_or_broken_wcs_is_ignored_with_a_note() -> None:
    base = [("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"), ("CRVAL1", 10.0),
            ("CRVAL2", 20.0), ("CRPIX1", 500.0), ("CRPIX2", 400.0)]  # fmt: skip
    singular = base + [("CD1_1", 1e-3), ("CD1_2", 2e-3), ("CD2_1", 1e-3), ("CD2_2", 2e-3)]
    found = header_hints.from_fits_cards(singular, 1000, 800)
    assert found.wcs is None and any("singular" in note for note in found.notes)
    nan = base + [("CD1_1", float("nan")), ("CD1_2", 0.0), ("CD2_1", 0.0), ("CD2_2", 1e-3)]
    assert header_hints.from_fits_cards(nan, 1000, 800).wcs is None
    galactic = [("CTYPE1", "GLON-TAN"), ("CTYPE2", "GLAT-TAN")] + base[2:]
    assert header_hints.from_fits_cards(galactic, 1000, 800).wcs is None
    good = base + [("CD1_1", -1e-3), ("CD1_2", 0.0), ("CD2_1", 0.0), ("CD2_2", 1e-3)]
    checked = header_hints.from_fits_cards(good, 1000, 800)
    assert checked.wcs is not None and checked.wcs_scale == pytest.approx(3.6)


def test_explicit_hints_always_win_and_the_header_fills_only_what_is_missing() -> None:
    found = header_hints.from_fits_cards([("FOCALLEN", 530), ("XPIXSZ", 3.76), ("RA", 83.8),
                                   ("DEC", -5.4)], 1000, 800)  # fmt: skip
    blind = SolveParams()
    plan = hints.plan_attempts(blind, found, 1000, 800)
    assert [a.parts for a in plan] == [("scale", "position"), ("scale",)]
    both = parse_solve_params({"scale_units": "degwidth", "scale_lower": 1, "scale_upper": 2,
                               "center_ra": 10, "center_dec": 10, "radius": 5})  # fmt: skip
    assert hints.plan_attempts(both, found, 1000, 800) == []
    scale_only = parse_solve_params({"scale_units": "arcsecperpix", "scale_lower": 1,
                                     "scale_upper": 2})  # fmt: skip
    (attempt,) = hints.plan_attempts(scale_only, found, 1000, 800)
    assert attempt.parts == ("position",)
    assert (attempt.params.scale_lower, attempt.params.scale_upper) == (1, 2)
    # The radius covers the field diagonal (2 arcsec/px x 1281 px) plus the mount's error.
    assert attempt.params.radius == pytest.approx(2 * math.hypot(1000, 800) / 3600 + 3)


def test_exif_optics_give_a_scale() -> None:
    tags = {0x920A: 50.0, 0xA20E: 200.0, 0xA210: 4, 0xA002: 1600}
    found = header_hints.from_exif(tags, 800, 600)  # resized to half: pixels twice as large
    assert found.scale is not None
    expected = 206264.806 * (2 / 200.0) / 50.0  # pixel in mm / focal length in mm
    assert found.scale.lower < expected < found.scale.upper
    equivalent = header_hints.from_exif({0xA405: 50}, 6000, 4000)
    assert equivalent.scale is not None and equivalent.scale.keywords == ("FocalLengthIn35mmFilm",)
    assert header_hints.from_exif({0x920A: -3.0, 0xA20E: 0.0, 0xA210: 9}, 800, 600).scale is None


# -- real frames through the whole service ---------------------------------------------------


@pytest.fixture(scope="module")
def solutions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, fits.Header]:
    """The known solution of apod2 and apod3 as FITS frames: solve-field, once, hinted."""
    from tests.support.paths import APOD

    found = {}
    for name in ("apod2", "apod3"):
        work = tmp_path_factory.mktemp(name)
        frame = work / f"{name}.fits"
        fits.PrimaryHDU(grey_frame(APOD, name)).writeto(frame)
        width = APOD_CENTRES[name][2]
        subprocess.run(
            ["solve-field", "--no-plots", "--overwrite", "--dir", str(work), "--scale-units",
             "degwidth", "--scale-low", str(width * 0.8), "--scale-high", str(width * 1.2),
             "--downsample", "2", "--new-fits", "none", "--corr", "none", "--rdls", "none",
             "--match", "none", "--index-xyls", "none", "--solved", "none", str(frame)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        found[name] = fits.getheader(work / f"{name}.wcs")
    return found


def grey_frame(apod: Path, name: str) -> np.ndarray:
    """The photo as a camera frame: 16-bit grey (int16, no BZERO), FITS rows bottom-up."""
    grey = np.asarray(Image.open(apod / f"{name}.jpg").convert("L"))
    return np.flipud(grey).astype(np.int16) * 64


def solved_scale_and_centre(wcs_header: fits.Header) -> tuple[float, float, float]:
    wcs = WCS(wcs_header)
    scale = math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600
    ra, dec = wcs.all_pix2world(
        [[(wcs_header["IMAGEW"] + 1) / 2, (wcs_header["IMAGEH"] + 1) / 2]], 1
    )[0]
    return scale, float(ra), float(dec)


def nina_header(solution: fits.Header, ra_offset: float = 0.0) -> fits.Header:
    scale, ra, dec = solved_scale_and_centre(solution)
    header = fits.Header()
    for key, value in [
        ("IMAGETYP", "LIGHT"), ("EXPOSURE", 120.0), ("EXPTIME", 120.0), ("XBINNING", 1),
        ("YBINNING", 1), ("GAIN", 100), ("XPIXSZ", PIXEL_UM), ("YPIXSZ", PIXEL_UM),
        ("INSTRUME", "ZWO ASI2600MM Pro"), ("TELESCOP", "Samyang 135"),
        ("FOCALLEN", round(206.264806 * PIXEL_UM / scale, 1)), ("FOCRATIO", 2.0),
        ("RA", (ra + ra_offset) % 360), ("DEC", dec), ("CENTALT", 45.0), ("SITELAT", 48.1),
        ("SWCREATE", "N.I.N.A. 3.1.2.9001"),
    ]:  # fmt: skip
        header[key] = value
    return header


def sgp_header(solution: fits.Header) -> fits.Header:
    """SGP-style: sexagesimal OBJCTRA/OBJCTDEC, a binned camera (XPIXSZ after binning)."""
    scale, ra, dec = solved_scale_and_centre(solution)
    hours = ra / 15
    sign, degrees = ("-" if dec < 0 else "+"), abs(dec)

    def sexagesimal(value: float) -> str:
        whole, rest = int(value), (value - int(value)) * 60
        return f"{whole:02d} {int(rest):02d} {(rest - int(rest)) * 60:04.1f}"

    header = fits.Header()
    header["OBJCTRA"] = sexagesimal(hours)
    header["OBJCTDEC"] = sign + sexagesimal(degrees)
    header["XBINNING"] = 2
    header["XPIXSZ"] = 2 * PIXEL_UM
    header["FOCALLEN"] = round(206.264806 * 2 * PIXEL_UM / scale, 1)
    header["CREATOR"] = "Sequence Generator Pro v4.2"
    return header


def old_wcs_header(solution: fits.Header) -> fits.Header:
    """A WCS from an earlier solve of the same target, framed 0.05 degrees apart."""
    header = WCS(solution).celestial.to_header()
    header["CRVAL2"] = header["CRVAL2"] + 0.05
    return header


def garbage_header_bytes(data: np.ndarray) -> bytes:
    """Every kind of broken value, including cards astropy itself would never write."""
    header = fits.PrimaryHDU(data).header
    header["FOCALLEN"] = -500.0
    header["XPIXSZ"] = "big"
    header["PIXSCALE"] = 1e308
    header["RA"] = 400.0
    header["DEC"] = "PLACEHOLDER"
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    for key, value in [("CRVAL1", 10.0), ("CRVAL2", 20.0), ("CRPIX1", 1.0), ("CRPIX2", 1.0),
                       ("CD1_1", 0.0), ("CD1_2", 0.0), ("CD2_1", 0.0), ("CD2_2", 0.0)]:  # fmt: skip
        header[key] = value
    text = header.tostring()
    nan_card = "DEC     =                  NaN / not a number".ljust(80)
    start = text.index("DEC     = 'PLACEHOLDER'")
    text = text[:start] + nan_card + text[start + 80 :]
    hdu = fits.PrimaryHDU(data)
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    raw = buffer.getvalue()
    data_start = len(hdu.header.tostring())
    return text.encode("ascii") + raw[data_start:]


def fits_bytes(data: np.ndarray, header: fits.Header) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(data, header=header).writeto(buffer)
    return buffer.getvalue()


def xisf_bytes(tmp_path: Path, grey: np.ndarray, solution: fits.Header) -> bytes:
    """PixInsight-style: XISF Properties for the optics and the pointing (no FITS cards)."""
    scale, ra, dec = solved_scale_and_centre(solution)
    focal_m = 206.264806 * PIXEL_UM / scale / 1000

    def prop(name: str, value: float) -> dict[str, object]:
        return {"id": name, "type": "Float64", "value": value}

    metadata = {
        "FITSKeywords": {"INSTRUME": [{"value": "'ZWO ASI2600MM Pro'", "comment": ""}]},
        "XISFProperties": {
            header_hints.XISF_FOCAL: prop(header_hints.XISF_FOCAL, focal_m),
            header_hints.XISF_PIXEL: prop(header_hints.XISF_PIXEL, PIXEL_UM),
            header_hints.XISF_RA: prop(header_hints.XISF_RA, ra),
            header_hints.XISF_DEC: prop(header_hints.XISF_DEC, dec),
        },
    }
    path = tmp_path / "frame.xisf"
    XISF.write(str(path), grey[:, :, None], creator_app="test", image_metadata=metadata)
    return path.read_bytes()


def exif_jpeg(apod: Path, name: str, scale: float) -> bytes:
    """The photo as a camera writes it: EXIF focal length and focal-plane resolution."""
    image = Image.open(apod / f"{name}.jpg")
    focal = 135.0
    pixel_mm = scale * focal / 206264.806
    exif = Image.Exif()
    optics = exif.get_ifd(0x8769)
    optics[0x920A] = focal
    optics[0xA20E] = 1 / pixel_mm  # pixels per mm
    optics[0xA210] = 4  # mm
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def tiff16_with_tiff_ep_optics(grey: np.ndarray, scale: float) -> bytes:
    """A 16-bit camera TIFF (top row first) with TIFF/EP optics in IFD0."""
    focal = 135.0
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[0x920A] = focal
    info[0x920E] = 206264.806 / (scale * focal)
    info[0x9210] = 4
    buffer = io.BytesIO()
    Image.fromarray(grey.astype(np.uint16) * 256).save(buffer, "TIFF", tiffinfo=info)
    return buffer.getvalue()


def png16(grey: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey.astype(np.uint16) * 256).save(buffer, "PNG")
    return buffer.getvalue()


def info(client: FlaskClient, job_id: int) -> dict:
    return api_call(client, f"jobs/{job_id}/info", method="GET")  # type: ignore[return-value]


def assert_solved_at(job: object, solution: fits.Header) -> None:
    _, ra, dec = solved_scale_and_centre(solution)
    assert job.status == "success", (job.failure_reason, job.hints)  # type: ignore[attr-defined]
    cal = job.calibration  # type: ignore[attr-defined]
    assert angular_distance(cal.ra, cal.dec, ra, dec) < 0.05


def test_header_hints_on_real_frames(
    client: FlaskClient, apod: Path, tmp_path: Path, solutions: dict[str, fits.Header]
) -> None:
    apod2, apod3 = solutions["apod2"], solutions["apod3"]
    frame2, frame3 = grey_frame(apod, "apod2"), grey_frame(apod, "apod3")
    top_first2 = np.flipud(frame2) // 64
    scale2 = solved_scale_and_centre(apod2)[0]
    uploads = {
        "nina": (fits_bytes(frame2, nina_header(apod2)), {}),
        "sgp": (fits_bytes(frame3, sgp_header(apod3)), {}),
        "old-wcs": (fits_bytes(frame2, old_wcs_header(apod2)), {}),
        "wrong-ra": (fits_bytes(frame3, nina_header(apod3, ra_offset=30)), {}),
        "garbage": (garbage_header_bytes(frame2), {}),
        "turned-off": (fits_bytes(frame2, nina_header(apod2)), {"ignore_header_hints": "on"}),
        "user-scale": (
            fits_bytes(frame2, nina_header(apod2)),
            {
                "scale_hint": "on",
                "scale_units": "degwidth",
                "scale_type": "ul",
                "scale_lower": "3.5",
                "scale_upper": "5.5",
            },
        ),  # fmt: skip
        "xisf": (xisf_bytes(tmp_path, top_first2.astype(np.uint16) * 64, apod2), {}),
        "exif-jpeg": (exif_jpeg(apod, "apod2", scale2), {}),
        "tiff16": (tiff16_with_tiff_ep_optics(top_first2, scale2), {}),
        "png16": (png16(top_first2), {}),
    }
    submissions = {
        name: upload(client, data, f"{name}.bin", **fields)
        for name, (data, fields) in uploads.items()
    }
    run_worker()
    jobs = {name: finished_job(client, submission) for name, submission in submissions.items()}
    records = {name: info(client, job.id).get("hints") for name, job in jobs.items()}
    for name, job in jobs.items():
        assert_solved_at(job, apod3 if name in ("sgp", "wrong-ra") else apod2)
        # Every job says where its hints came from.
        assert records[name] is not None and records[name]["source"] in (
            "fits-header", "xisf", "exif", "user", "none"
        ), (name, records[name])  # fmt: skip

    nina = records["nina"]
    assert nina["source"] == "fits-header"
    assert nina["keywords"] == ["FOCALLEN", "XPIXSZ", "XBINNING", "RA", "DEC"]
    assert nina["scale"]["units"] == "arcsecperpix"
    assert nina["scale"]["lower"] < scale2 < nina["scale"]["upper"]
    assert nina["position"]["radius"] > 4.5
    assert nina["header_tried"] == []
    page = client.get(f"/user_images/{jobs['nina'].user_image_id}").get_data(as_text=True)
    assert "Scale and position from the FITS header (FOCALLEN, XPIXSZ, XBINNING, RA, DEC)" in page

    assert records["sgp"]["source"] == "fits-header"
    assert records["sgp"]["keywords"][-2:] == ["OBJCTRA", "OBJCTDEC"]

    old = records["old-wcs"]
    assert old["source"] == "fits-header" and old["wcs_verify_first"] is True
    assert {"CD1_1", "PC1_1"} & set(old["keywords"])  # astropy writes PC + CDELT
    joblog = client.get(f"/joblog/{jobs['old-wcs'].id}").get_data(as_text=True)
    assert "Verifying WCS" in joblog  # the engine checked the old solution first

    wrong = records["wrong-ra"]  # the pointing is wrong: the header's scale alone solved
    assert wrong["source"] == "fits-header" and wrong["position"] is None
    assert wrong["from_header"] == ["scale"]
    assert [a["from_header"] for a in wrong["header_tried"]] == [["scale", "position"]]

    garbage = records["garbage"]
    assert garbage["source"] == "none" and garbage["scale"] is None
    notes = " ".join(garbage["notes"])
    for keyword in ("FOCALLEN", "XPIXSZ", "PIXSCALE", "RA", "WCS"):
        assert keyword in notes, (keyword, garbage["notes"])
    page = client.get(f"/user_images/{jobs['garbage'].user_image_id}").get_data(as_text=True)
    assert "No scale or position hint: a blind solve." in page
    assert "FOCALLEN ignored" in page

    assert records["turned-off"]["source"] == "none"
    assert records["turned-off"]["notes"] == []

    user = records["user-scale"]  # the user's scale wins; the header adds the position
    assert user["source"] == "fits-header" and user["from_header"] == ["position"]
    assert user["scale"] == {"lower": 3.5, "upper": 5.5, "units": "degwidth"}
    page = client.get(f"/user_images/{jobs['user-scale'].user_image_id}").get_data(as_text=True)
    assert "Position from the FITS header (RA, DEC); scale from the upload options." in page

    xisf_record = records["xisf"]
    assert xisf_record["source"] == "xisf"
    assert header_hints.XISF_FOCAL in xisf_record["keywords"]
    assert header_hints.XISF_RA in xisf_record["keywords"]

    for name in ("exif-jpeg", "tiff16"):
        assert records[name]["source"] == "exif", records[name]
        assert records[name]["scale"]["lower"] < scale2 < records[name]["scale"]["upper"]
        assert records[name]["position"] is None
    assert records["png16"]["source"] == "none"


def test_the_setting_turns_header_hints_off(
    client: FlaskClient,
    apod: Path,
    solutions: dict[str, fits.Header],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOVA_USE_HEADER_HINTS", "false")
    frame = grey_frame(apod, "apod2")
    submission = upload(client, fits_bytes(frame, nina_header(solutions["apod2"])), "f.fits")
    run_worker()
    job = finished_job(client, submission)
    assert_solved_at(job, solutions["apod2"])
    assert info(client, job.id)["hints"]["source"] == "none"


def test_api_upload_option_and_info_key(
    client: FlaskClient, make_user: object, apod: Path, solutions: dict[str, fits.Header]
) -> None:
    from tests.support.api import api_login

    _, key = make_user("hints@example.org")  # type: ignore[operator]
    session = api_login(client, key)
    frame = grey_frame(apod, "apod2")
    data = fits_bytes(frame, nina_header(solutions["apod2"]))
    ids = {}
    for use in (True, False):
        response = client.post(
            "/api/upload",
            data={
                "request-json": json.dumps({"session": session, "use_header_hints": use}),
                "file": (io.BytesIO(data), "frame.fits"),
            },
            content_type="multipart/form-data",
        )
        ids[use] = response.get_json(force=True)["subid"]
    run_worker()
    for use, subid in ids.items():
        jobs = api_call(client, f"submissions/{subid}", method="GET")["jobs"]
        record = info(client, jobs[0])  # type: ignore[index]
        # The existing keys are nova's, unchanged; "hints" is added.
        assert {"objects_in_field", "machine_tags", "tags", "status", "original_filename",
                "calibration"} <= set(record)  # fmt: skip
        assert record["hints"]["source"] == ("fits-header" if use else "none")


def test_xisf_headers_beyond_the_limit_or_broken_are_refused_clearly(tmp_path: Path) -> None:
    from nova.engine.input_formats import UnsupportedInput
    from nova.engine.inputs import prepare_input
    from nova.engine.xisf_input import MAX_XISF_HEADER_BYTES

    huge = tmp_path / "huge.xisf"
    huge.write_bytes(b"XISF0100" + (MAX_XISF_HEADER_BYTES + 1).to_bytes(4, "little") + bytes(8))
    broken = tmp_path / "broken.xisf"
    broken.write_bytes(b"XISF0100" + (40).to_bytes(4, "little") + bytes(4) + b"<xisf" * 8)
    for path, message in ((huge, "XML header is"), (broken, "could not be read")):
        with pytest.raises(UnsupportedInput, match=message):
            prepare_input(
                path,
                tmp_path,
                max_pixels=10**8,
                max_uncompressed_bytes=10**8,
                max_ratio=1000,
                max_stars=100_000,
            )


def test_an_xisf_image_larger_than_the_pixel_limit_is_refused_before_decoding(
    tmp_path: Path,
) -> None:
    from nova.engine.input_formats import UnsupportedInput
    from nova.engine.inputs import prepare_input

    path = tmp_path / "big.xisf"
    XISF.write(str(path), np.zeros((300, 400, 1), dtype=np.uint16), creator_app="test")
    with pytest.raises(UnsupportedInput, match="400x300 pixels; the limit is 100,000"):
        prepare_input(
            path,
            tmp_path,
            max_pixels=100_000,
            max_uncompressed_bytes=10**8,
            max_ratio=1000,
            max_stars=100_000,
        )
    prepared = prepare_input(
        path,
        tmp_path,
        max_pixels=10**6,
        max_uncompressed_bytes=10**8,
        max_ratio=1000,
        max_stars=100_000,
    )
    assert (prepared.kind, prepared.width, prepared.height) == ("fits", 400, 300)
    assert prepared.header_source.kind == "xisf"


@pytest.mark.parametrize("codec", ["zlib", "zlib+sh", "lz4", "zstd"])
def test_compressed_xisf_reads_the_same_pixels(tmp_path: Path, codec: str) -> None:
    from nova.engine.inputs import prepare_input

    pixels = (np.arange(120 * 90, dtype=np.uint16).reshape(90, 120) * 7) % 4096
    path = tmp_path / f"{codec}.xisf"
    XISF.write(str(path), pixels[:, :, None], creator_app="test",
               codec=codec.split("+")[0], shuffle=codec.endswith("+sh"))  # fmt: skip
    assert "compression" in XISF(str(path)).get_images_metadata()[0]
    prepared = prepare_input(
        path,
        tmp_path,
        max_pixels=10**6,
        max_uncompressed_bytes=10**8,
        max_ratio=1000,
        max_stars=100_000,
    )
    assert np.array_equal(np.flipud(fits.getdata(prepared.path)), pixels)


def test_a_zlib_bomb_in_xisf_is_refused_without_expanding(tmp_path: Path) -> None:
    """A block that declares a small image but inflates to 1 GB stops at the declared size."""
    import zlib

    from nova.engine.input_formats import UnsupportedInput
    from nova.engine.inputs import prepare_input

    bomb = zlib.compress(bytes(1 << 30), 9)  # 1 GB of zeros in about 1 MB
    header_length = 4096
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><xisf version="1.0" '
        'xmlns="http://www.pixinsight.com/xisf"><Image geometry="10:10:1" sampleFormat="UInt8" '
        f'colorSpace="Gray" location="attachment:{16 + header_length}:{len(bomb)}" '
        'compression="zlib:100"/><Metadata/></xisf>'
    )
    small = tmp_path / "bomb.xisf"
    small.write_bytes(
        b"XISF0100" + header_length.to_bytes(4, "little") + bytes(4)
        + xml.encode().ljust(header_length, b"\0") + bomb
    )  # fmt: skip
    with pytest.raises(UnsupportedInput, match="zlib data do not match"):
        prepare_input(
            small,
            tmp_path,
            max_pixels=10**6,
            max_uncompressed_bytes=10**8,
            max_ratio=1000,
            max_stars=100_000,
        )
