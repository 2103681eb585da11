"""Pictures and objects of a solved field: what they show, their types and sizes, caching."""

from __future__ import annotations

import io
import subprocess
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from nova.db.models import Job
from nova.engine import fieldobjects
from nova.engine.input_formats import PreparedInput
from nova.engine.job_files import WCS_NAME
from nova.render.overlays import DrawnLabel, write_annotated
from nova.render.pictures import (
    base_picture,
    flip_wcs_y,
    make_wcs,
    open_field,
    render_scale,
    resized,
    scale_for,
)
from nova.render.products import JOB_PRODUCTS
from nova.services import storage
from tests.integration.test_solve_apod import APOD_CENTRES, finished_job, scale_hint, upload
from tests.support.api import api_call
from tests.support.figures import record_figure
from tests.support.paths import REPO
from tests.support.processes import run_worker
from tests.support.settings import change_settings

ARTIFACTS = REPO / "test-artifacts"


def solve(
    client: FlaskClient,
    apod: Path,
    name: str,
    data: bytes | None = None,
    filename: str | None = None,
) -> Job:
    payload = data if data is not None else (apod / f"{name}.jpg").read_bytes()
    submission_id = upload(
        client, payload, filename or f"{name}.jpg", **scale_hint(APOD_CENTRES[name][2])
    )
    run_worker()
    job = finished_job(client, submission_id)
    assert job.status == "success", job.failure_reason
    return job


def test_flipping_a_wcs_keeps_every_pixel_on_the_same_sky() -> None:
    rng = np.random.default_rng(3)
    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN-SIP",
        CTYPE2="DEC--TAN-SIP",
        CRVAL1=120.0,
        CRVAL2=40.0,
        CRPIX1=310.2,
        CRPIX2=190.7,
        CD1_1=1e-3,
        CD1_2=2e-4,
        CD2_1=-2.5e-4,
        CD2_2=9e-4,
        A_ORDER=2,
        B_ORDER=2,
        AP_ORDER=2,
        BP_ORDER=2,
    )
    for prefix in ("A", "B", "AP", "BP"):
        for p, q in ((0, 2), (1, 1), (2, 0), (0, 1), (1, 0)):
            header[f"{prefix}_{p}_{q}"] = float(rng.normal(0, 1e-5))
    height = 400
    x, y = rng.uniform(1, 600, 50), rng.uniform(1, height, 50)
    original = make_wcs(header).all_pix2world(x, y, 1)
    flipped = make_wcs(flip_wcs_y(header, height)).all_pix2world(x, height + 1 - y, 1)
    assert np.allclose(original, flipped, atol=1e-9)


@pytest.mark.engine
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("apod2", ["Orion", "Alnitak", "IC 434", "NGC 2024"]),
        ("apod4", ["Ursa Major", "Dubhe", "Merak", "Alioth", "Mizar"]),
    ],
)
def test_objects_in_the_field_and_annotations_agree_with_the_wcs(
    client: FlaskClient, apod: Path, name: str, expected: list[str]
) -> None:
    job = solve(client, apod, name)
    objects = api_call(client, f"jobs/{job.id}/objects_in_field")["objects_in_field"]
    text = " | ".join(objects)
    for word in expected:
        assert word in text, (word, objects)
    annotations = api_call(client, f"jobs/{job.id}/annotations")["annotations"]
    wcs = make_wcs(fits.Header.fromstring(job.calibration.wcs_header, sep="\n"))
    index = "/usr/share/astrometry/index-tycho2-10.littleendian.fits"
    distances = []
    for star in [a for a in annotations if a["type"] == "bright"][:12]:
        # Round trip: annotation pixel -> sky -> the catalogue star there -> pixel.
        ra, dec = wcs.all_pix2world([[star["pixelx"], star["pixely"]]], 1)[0]
        found = subprocess.run(
            ["query-starkd", "-T", "-r", str(ra), "-d", str(dec), "-R", "0.1", index],
            capture_output=True,
            text=True,
            check=True,
        )
        rows = [
            line.split(",") for line in found.stdout.splitlines() if line[:1].isdigit()
        ]  # "ra, dec, mag" rows; the rest is chatter
        # The nearest Tycho-2 star bright enough to be a named star (< 6.5 mag).
        bright_rows = [row for row in rows if float(row[2]) < 6.5]
        if not bright_rows:
            continue  # not in this index (e.g. Megrez): nothing to compare with
        positions = np.array([[float(r[0]), float(r[1])] for r in bright_rows])
        pixels = wcs.all_world2pix(positions, 1)
        distance = np.min(np.hypot(pixels[:, 0] - star["pixelx"], pixels[:, 1] - star["pixely"]))
        distances.append(float(distance))
    print(name, "annotation to catalogue star (px):", [round(d, 2) for d in distances])
    # Within 1 px for nearly all; multiple stars (sigma Ori) may sit a few pixels apart in
    # the two catalogues, so they are allowed 3 px.
    within = sum(distance < 1.0 for distance in distances)
    assert len(distances) >= 4 and within >= 0.8 * len(distances) and max(distances) < 3.0
    nebulae = [a for a in annotations if a["type"] in ("ngc", "ic")]
    if name == "apod2":
        ic434 = next(a for a in nebulae if a["names"][0] == "IC 434")
        assert ic434["type"] == "ic" and ic434["radius"] > 10
        assert "Flame Nebula" in ic434["names"]


def draw_annotated(
    job: Job, prepared: PreparedInput, size: str, target: Path
) -> tuple[list[DrawnLabel], np.ndarray]:
    """The annotated picture of a solved job drawn as its product is (same field objects,
    same field), with the labels it drew, and the picture under the drawing."""
    job_dir = storage().job_dir(job.id)
    header = fits.getheader(job_dir / WCS_NAME)
    field = open_field(prepared, header)
    scale = scale_for(size, prepared.width, prepared.height)
    labels = write_annotated(field, scale, target, fieldobjects.field_objects(job_dir, WCS_NAME))
    plain = np.asarray(resized(field.picture, scale, (field.width, field.height)), dtype=int)
    return labels, plain


def angular_distance(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    cosine = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return float(np.degrees(np.arccos(np.clip(cosine, -1, 1))))


@pytest.mark.engine
@pytest.mark.parametrize("name", ["apod4", "apod2"])
def test_the_annotated_picture_labels_exactly_the_listed_objects_where_the_wcs_puts_them(
    client: FlaskClient, apod: Path, tmp_path: Path, name: str
) -> None:
    """Every label drawn is an object objects_in_field lists (and every listed star and
    constellation is drawn); each star's marker sits where astropy projects the catalogue
    star with the stored calibration, on the API's annotation, and the pixels there (and
    under the label) changed while the sky elsewhere did not. apod4: no phantom "39 Cyg"."""
    job = solve(client, apod, name)
    objects = api_call(client, f"jobs/{job.id}/objects_in_field")["objects_in_field"]
    annotations = api_call(client, f"jobs/{job.id}/annotations")["annotations"]
    with Image.open(apod / f"{name}.jpg") as original:
        prepared = PreparedInput("jpeg", apod / f"{name}.jpg", original.width, original.height)
    labels, plain = draw_annotated(job, prepared, "full", tmp_path / "annotated.jpg")
    drawn = np.asarray(Image.open(tmp_path / "annotated.jpg").convert("RGB"), dtype=int)
    # What the site serves is this very drawing.
    served = fetch_picture(client, f"/annotated_full/{job.id}", "JPEG")
    assert np.array_equal(np.asarray(served.convert("RGB"), dtype=int), drawn)
    height, width = drawn.shape[:2]

    kinds = {
        kind: [label for label in labels if label.mark.kind == kind]
        for kind in ("constellation", "star", "ngc")
    }
    assert {label.mark.listed for label in kinds["star"]} == {
        entry for entry in objects if entry.startswith("The star ")
    }
    assert {label.mark.listed for label in kinds["constellation"]} == {
        entry for entry in objects if "constellation " in entry
    }
    for label in labels:
        assert label.mark.listed in objects, (label, objects)
        if label.mark.kind == "ngc":
            assert all(part in objects for part in label.mark.label.split(" / ")), label
        else:
            assert label.mark.label in label.mark.listed, label
    drawn_text = " | ".join(label.mark.label for label in labels)
    if name == "apod4":
        assert "Cyg" not in drawn_text and not any("Cyg" in entry for entry in objects)
        assert {"Dubhe", "Merak", "Alioth", "Mizar", "Ursa Major"} <= {
            label.mark.label for label in labels
        }
    else:
        assert {"IC 434 / Orion B", "NGC 2024", "Alnitak"} <= {label.mark.label for label in labels}

    # Independent projection: the catalogue stars' RA/Dec through astropy and the calibration
    # the database holds, to 0-based pixels of this (unscaled, y-down) picture.
    calibration = job.calibration
    wcs = make_wcs(fits.Header.fromstring(calibration.wcs_header, sep="\n"))
    catalogue = {star.listed: star for star in fieldobjects.engine_catalogue().stars}
    api_stars = {" / ".join(a["names"]): a for a in annotations if a["type"] == "bright"}
    offsets = []
    for label in kinds["star"]:
        star = catalogue[label.mark.line]
        assert angular_distance(star.ra, star.dec, calibration.ra, calibration.dec) <= (
            calibration.radius
        )
        x, y = wcs.all_world2pix([[star.ra, star.dec]], 0)[0]
        offsets.append(float(np.hypot(x - label.x, y - label.y)))
        api = api_stars[" / ".join(star.names)]
        assert abs(api["pixelx"] - 1 - label.x) < 0.01 and abs(api["pixely"] - 1 - label.y) < 0.01
    assert offsets and max(offsets) < 2.0, offsets
    api_nebulae = {a["names"][0]: a for a in annotations if a["type"] in ("ngc", "ic")}
    for label in kinds["ngc"]:
        api = api_nebulae[label.mark.listed]
        assert abs(api["pixelx"] - 1 - label.x) < 0.01 and abs(api["pixely"] - 1 - label.y) < 0.01

    # The drawing is there: pixels changed on every marker and under every label, inside
    # the picture; labels clear of each other; most of the sky untouched.
    change = np.abs(drawn - plain).max(axis=2)
    for label in labels:
        left, top, right, bottom = label.box
        assert 0 <= left < right <= width and 0 <= top < bottom <= height, label
        box = change[int(top) : int(np.ceil(bottom)), int(left) : int(np.ceil(right))]
        assert (box > 100).mean() > 0.05, (label, (box > 100).mean())
        if label.mark.kind == "star":  # a ring and a dot on the star
            x, y = round(label.x), round(label.y)
            around = change[max(0, y - 8) : y + 9, max(0, x - 8) : x + 9]
            assert around.max() > 60, label  # a light ring on a bright nebula: less
        elif label.mark.kind == "ngc":  # a circle its size around it
            angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            radius = max(label.mark.radius, 5.0)
            xs = np.round(label.x + radius * np.cos(angles)).astype(int)
            ys = np.round(label.y + radius * np.sin(angles)).astype(int)
            inside = (xs >= 1) & (xs < width - 1) & (ys >= 1) & (ys < height - 1)
            on_ring = [
                change[y - 1 : y + 2, x - 1 : x + 2].max() > 60
                for x, y in zip(xs[inside], ys[inside], strict=True)
            ]
            assert np.mean(on_ring) > 0.8, (label, np.mean(on_ring))
    if name == "apod4":
        for first in labels:
            for second in labels:
                if first is not second:
                    a, b = first.box, second.box
                    assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(
                        a[1], b[1]
                    ), (first, second)
    assert np.median(change) < 8
    record_figure(
        f"{name} annotated: {len(labels)} labels, star markers within "
        f"{max(offsets):.2f} px of astropy's projection"
    )


@pytest.mark.engine
def test_constellation_lines_drawn_are_the_catalogues_lines_not_folded_ones(
    client: FlaskClient, apod: Path, tmp_path: Path
) -> None:
    """Every point of a constellation line inside apod4's picture is, through the forward
    WCS (which cannot fold), on one of the catalogue's lines; and the picture shows it."""
    job = solve(client, apod, "apod4")
    job_dir = storage().job_dir(job.id)
    found = fieldobjects.field_objects(job_dir, WCS_NAME)
    wcs = make_wcs(fits.Header.fromstring(job.calibration.wcs_header, sep="\n"))
    segments = []
    for constellation in fieldobjects.engine_catalogue().constellations:
        for first, second in constellation.lines:
            ends = np.radians([constellation.stars[first], constellation.stars[second]])
            segments.append(
                np.column_stack(
                    [
                        np.cos(ends[:, 1]) * np.cos(ends[:, 0]),
                        np.cos(ends[:, 1]) * np.sin(ends[:, 0]),
                        np.sin(ends[:, 1]),
                    ]
                )
            )
    a, b = np.array([s[0] for s in segments]), np.array([s[1] for s in segments])
    normals = np.cross(a, b)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    prepared = PreparedInput("jpeg", apod / "apod4.jpg", 719, 507)
    draw_annotated(job, prepared, "full", tmp_path / "annotated.jpg")
    drawn = np.asarray(Image.open(tmp_path / "annotated.jpg").convert("RGB"), dtype=int)
    plain = np.asarray(Image.open(apod / "apod4.jpg").convert("RGB"), dtype=int)
    change = np.abs(drawn - plain).max(axis=2)
    points = np.concatenate(found.constellation_lines)
    points = points[np.isfinite(points).all(axis=1)]
    inside = (points[:, 0] >= 2) & (points[:, 0] <= 718) & (points[:, 1] >= 2)
    inside &= points[:, 1] <= 506
    points = points[inside]
    assert len(points) > 50
    ra, dec = np.radians(wcs.all_pix2world(points, 1)).T
    sky = np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    # Off each line's great circle (degrees), and whether between its two stars (give or
    # take 0.02 degrees: a line's end is its star, placed back on the sky by the WCS).
    off = np.degrees(np.arcsin(np.abs(sky @ normals.T)))
    between = ((np.cross(a, sky[:, None, :]) * normals).sum(axis=2) >= -3e-4) & (
        (np.cross(sky[:, None, :], b) * normals).sum(axis=2) >= -3e-4
    )
    nearest = np.where(between, off, np.inf).min(axis=1)
    assert nearest.max() < 0.05, (points[nearest > 0.05], nearest[nearest > 0.05])  # 1 px here
    # And drawn: the picture changed at (nearly) every such point.
    xs, ys = np.round(points[:, 0] - 1).astype(int), np.round(points[:, 1] - 1).astype(int)
    shown = [change[y - 1 : y + 2, x - 1 : x + 2].max() > 40 for x, y in zip(xs, ys, strict=True)]
    assert np.mean(shown) > 0.9, np.mean(shown)


PICTURES = [
    ("annotated_full", "JPEG", "full"),
    ("annotated_display", "JPEG", "display"),
    ("grid_full", "JPEG", "full"),
    ("grid_display", "JPEG", "display"),
    ("red_green_image_full", "PNG", "full"),
    ("red_green_image_display", "PNG", "display"),
    ("extraction_image_full", "PNG", "full"),
    ("extraction_image_display", "PNG", "display"),
]


def fetch_picture(client: FlaskClient, path: str, fmt: str) -> Image.Image:
    response = client.get(path)
    assert response.status_code == 200, (path, response.get_data(as_text=True)[:300])
    assert response.headers["Content-Type"] == f"image/{fmt.lower()}"
    assert "max-age" in response.headers["Cache-Control"]
    picture = Image.open(io.BytesIO(response.data))
    picture.load()
    assert picture.format == fmt
    return picture


@pytest.mark.engine
@pytest.mark.parametrize("variant", ["jpeg", "fits", "xylist"])
def test_every_picture_is_an_image_of_the_right_type_and_size(
    app: Flask, client: FlaskClient, apod: Path, variant: str
) -> None:
    if variant == "fits":
        grey = np.flipud(np.asarray(Image.open(apod / "apod4.jpg").convert("L")))
        buffer = io.BytesIO()
        fits.PrimaryHDU(grey.astype(np.int16)).writeto(buffer)
        job = solve(client, apod, "apod4", buffer.getvalue(), "apod4.fits")
    elif variant == "xylist":
        job = solve(client, apod, "apod4", (apod / "apod4.xyls").read_bytes(), "apod4.xyls")
    else:
        job = solve(client, apod, "apod4")
    ARTIFACTS.mkdir(exist_ok=True)
    timings = []
    for name, fmt, size in PICTURES:
        started = time.perf_counter()
        picture = fetch_picture(client, f"/{name}/{job.id}", fmt)
        first = time.perf_counter() - started
        expected = (719, 507) if size == "full" else (640, round(507 * 640 / 719))
        assert picture.size == expected, (name, picture.size)
        picture.save(ARTIFACTS / f"{variant}-{name}.{fmt.lower()}")
        built = next(Path(app.config["DATA_DIR"], "jobs").rglob(JOB_PRODUCTS[name].filename))
        mtime = built.stat().st_mtime_ns
        started = time.perf_counter()
        again = client.get(f"/{name}/{job.id}/")
        cached = time.perf_counter() - started
        assert again.status_code == 200 and again.data == built.read_bytes()
        assert built.stat().st_mtime_ns == mtime  # served from the file, not drawn again
        timings.append(f"{name} {first * 1000:.0f}->{cached * 1000:.1f} ms")
    record_figure(f"{variant}: first request -> cached: " + ", ".join(timings))
    # The upload itself: display picture, thumbnail, full picture.
    image_id = job.user_image_id
    thumb = fetch_picture(
        client, f"/thumbnail_of_image/{image_id}", "PNG" if variant == "xylist" else "JPEG"
    )
    assert max(thumb.size) == 256
    display = fetch_picture(
        client, f"/display_image/{image_id}", "PNG" if variant == "xylist" else "JPEG"
    )
    assert max(display.size) == 640
    full = client.get(f"/image/{image_id}")
    expected_type = {"jpeg": "image/jpeg", "fits": "image/jpeg", "xylist": "image/png"}[variant]
    assert full.headers["Content-Type"] == expected_type
    assert Image.open(io.BytesIO(full.data)).size == (719, 507)
    for zoom in range(4):
        plot = fetch_picture(client, f"/sky_plot/zoom{zoom}/{job.calibration.id}", "PNG")
        assert plot.size == (256, 256)
        plot.save(ARTIFACTS / f"{variant}-sky-zoom{zoom}.png")
    assert client.get(f"/sky_plot/zoom7/{job.calibration.id}").status_code == 404


@pytest.mark.engine
def test_fits_pictures_show_the_sky_the_same_way_as_the_jpeg(
    client: FlaskClient, apod: Path, tmp_path: Path
) -> None:
    """A FITS upload is displayed y-up; its annotations must land on the same stars."""
    jpeg_job = solve(client, apod, "apod4")
    grey = np.flipud(np.asarray(Image.open(apod / "apod4.jpg").convert("L")))
    buffer = io.BytesIO()
    fits.PrimaryHDU(grey.astype(np.int16)).writeto(buffer)
    fits_job = solve(client, apod, "apod4", buffer.getvalue(), "apod4.fits")
    pictures = []
    for job in (jpeg_job, fits_job):
        response = client.get(f"/red_green_image_full/{job.id}")
        pictures.append(np.asarray(Image.open(io.BytesIO(response.data)).convert("RGB")))
    # Green catalogue circles are drawn at the same display pixels for both.
    green = [(p[:, :, 1] > 200) & (p[:, :, 0] < 80) & (p[:, :, 2] < 80) for p in pictures]
    overlap = (green[0] & green[1]).sum() / max(1, green[0].sum())
    assert overlap > 0.8, overlap
    # The annotated pictures label the same objects at the same display pixels.
    fits_path = tmp_path / "apod4.fits"
    fits_path.write_bytes(buffer.getvalue())
    placements = []
    for job, prepared in (
        (jpeg_job, PreparedInput("jpeg", apod / "apod4.jpg", 719, 507)),
        (fits_job, PreparedInput("fits", fits_path, 719, 507)),
    ):
        labels, _ = draw_annotated(job, prepared, "display", tmp_path / f"{prepared.kind}.jpg")
        placements.append({label.mark.listed: (label.x, label.y) for label in labels})
    assert placements[0].keys() == placements[1].keys() and len(placements[0]) >= 8
    for listed, (x, y) in placements[0].items():
        fx, fy = placements[1][listed]
        assert abs(x - fx) < 1.5 and abs(y - fy) < 1.5, (listed, (x, y), (fx, fy))


@pytest.mark.engine
def test_kmz_holds_kml_whose_corners_match_the_wcs(client: FlaskClient, apod: Path) -> None:
    job = solve(client, apod, "apod4")
    response = client.get(f"/kml_file/{job.id}/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/vnd.google-earth.kmz"
    with zipfile.ZipFile(io.BytesIO(response.data)) as kmz:
        assert set(kmz.namelist()) == {"doc.kml", "image.jpg"}
        root = ET.fromstring(kmz.read("doc.kml"))
        Image.open(io.BytesIO(kmz.read("image.jpg"))).load()
    assert root.get("hint") == "target=sky"
    ns = {"k": "http://www.opengis.net/kml/2.2", "gx": "http://www.google.com/kml/ext/2.2"}
    text = root.find(".//gx:LatLonQuad/k:coordinates", ns)
    assert text is not None and root.find(".//k:Icon/k:href", ns).text == "image.jpg"
    corners = [tuple(map(float, pair.split(","))) for pair in text.text.split()]
    wcs = make_wcs(fits.Header.fromstring(job.calibration.wcs_header, sep="\n"))
    expected = wcs.all_pix2world([[0.5, 507.5], [719.5, 507.5], [719.5, 0.5], [0.5, 0.5]], 1)
    for (lon, lat), (ra, dec) in zip(corners, expected, strict=True):
        assert lon == pytest.approx(ra - 180, abs=1e-6) and lat == pytest.approx(dec, abs=1e-6)


@pytest.mark.engine
def test_pictures_of_large_images_are_drawn_within_the_render_limit(
    app: Flask, client: FlaskClient, apod: Path
) -> None:
    """NOVA_MAX_RENDER_PIXELS bounds every picture: the full-size ones are downscaled to it
    (and so are display ones here, as the limit is below 640 pixels wide)."""
    job = solve(client, apod, "apod4")
    width, height = 719, 507
    limit = width * height // 4  # as if the photo were twice as large in each direction
    change_settings(app, MAX_RENDER_PIXELS=limit)
    sizes = {}
    for name, fmt, _ in PICTURES:
        picture = fetch_picture(client, f"/{name}/{job.id}", fmt)
        sizes[name] = picture.size
        assert picture.width * picture.height <= limit, (name, picture.size)
        # Downscaled, not cropped: nearly the limit, and the field's shape.
        assert picture.width * picture.height > 0.98 * limit, (name, picture.size)
        assert abs(picture.width / picture.height - width / height) < 0.01, (name, picture.size)
    record_figure(
        f"render limit {limit:,} px on a {width}x{height} photo: full pictures "
        + ", ".join(f"{name} {w}x{h}" for name, (w, h) in sizes.items() if "full" in name)
    )


def test_a_star_list_claiming_a_huge_image_is_drawn_small_and_fast(tmp_path: Path) -> None:
    """A star list may claim up to 1,000,000 x 1,000,000 pixels: its picture is drawn at the
    reduced size directly, never at full size (3 TB of RGB)."""
    path = tmp_path / "stars.xyls"
    x = np.array([10.0, 500_000.0, 999_999.0])
    fits.BinTableHDU.from_columns(
        [fits.Column(name="X", format="D", array=x), fits.Column(name="Y", format="D", array=x)]
    ).writeto(path)
    prepared = PreparedInput("xylist", path, 1_000_000, 1_000_000)
    started = time.perf_counter()
    picture = base_picture(prepared, max_pixels=1_000_000)
    elapsed = time.perf_counter() - started
    assert picture.width * picture.height <= 1_000_000 and elapsed < 5
    # The middle star is drawn in the middle of the reduced picture.
    assert picture.getpixel((picture.width // 2, picture.height // 2)) == (255, 255, 255)


def test_a_large_fits_image_is_read_reduced(tmp_path: Path) -> None:
    """Only every n-th pixel of a FITS image over the limit is read and stretched."""
    data = np.zeros((3000, 4000), dtype=np.int16)
    data[1500, 2000] = 1000
    path = tmp_path / "big.fits"
    fits.PrimaryHDU(data).writeto(path)
    prepared = PreparedInput("fits", path, 4000, 3000)
    picture = base_picture(prepared, max_pixels=1_000_000)
    scale = render_scale(4000, 3000, 1_000_000)
    # At least as large as the rendering needs, at most twice that in each direction.
    assert 4000 * scale <= picture.width <= 2 * 4000 * scale
    assert 3000 * scale <= picture.height <= 2 * 3000 * scale
    full_size = resized(picture, scale, (4000, 3000))
    assert full_size.width * full_size.height <= 1_000_000
