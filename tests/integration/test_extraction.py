"""Stage 1 in the worker (nova/engine/extraction.py) against ``solve-field --just-augment``.

Each case prepares the same upload twice, as Nova does, and writes ``job.axy`` both ways:
the sources (X, Y, FLUX, BACKGROUND) must be the same values in the same order, and the
header cards the same. Real tools and real photos; a missing tool fails, never skips.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from nova.engine import commands, extraction, job_files, process, solver
from nova.engine.input_formats import PreparedInput
from nova.engine.inputs import prepare_input
from nova.engine.params import SolveParams, parse_solve_params
from tests.support.figures import record_figure
from tests.support.paths import APOD

pytestmark = pytest.mark.engine

# Known field widths (degrees): the hints are +-20 % around them, as a careful user gives.
WIDTHS = {"apod1": 1.5, "apod2": 4.5, "apod3": 8.4, "apod4": 33.0, "apod5": 64.0}
# The table's structure cards: the Python helpers rewrite their comments and spell "E" as
# "1E"; the columns themselves are compared by name, format and values.
STRUCTURE = ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS")
STRUCTURE_PREFIXES = ("TTYPE", "TFORM", "TUNIT")


def hinted(photo: str, **more: Any) -> SolveParams:
    width = WIDTHS[photo]
    return parse_solve_params(
        {"scale_units": "degwidth", "scale_lower": width * 0.8, "scale_upper": width * 1.2, **more}
    )


def prepare(source: Path, work_dir: Path, params: SolveParams) -> PreparedInput:
    return prepare_input(
        source,
        work_dir,
        max_pixels=200_000_000,
        max_uncompressed_bytes=1 << 30,
        max_ratio=200,
        max_stars=100_000,
        image_width=params.image_width,
        image_height=params.image_height,
    )


def runner(work_dir: Path, verbose: bool = False) -> extraction.Runner:
    """Run as the solver does (its deadline and log); ``verbose`` adds -v to solve-field."""

    def run(cmd: list[str]) -> int:
        if verbose and cmd[0] == "solve-field":
            cmd = [cmd[0], "-v", *cmd[1:]]
        return process.run_with_deadline(
            cmd, work_dir, work_dir / job_files.LOG_NAME, time.monotonic() + 120
        )

    return run


def extract_here(
    params: SolveParams, prepared: PreparedInput, work_dir: Path, verbose: bool = False
) -> extraction.Extraction:
    return extraction.extract(
        params,
        prepared,
        work_dir,
        run=runner(work_dir, verbose),
        augment_options=commands.augment_options(params, work_dir),
        max_sources=commands.MAX_SOURCES,
    )


def both_ways(
    source: Path, params: SolveParams, tmp_path: Path
) -> tuple[Path, Path, extraction.Extraction]:
    """job.axy by solve-field and by extraction; their directories and what extraction did."""
    theirs, ours = tmp_path / "solve-field", tmp_path / "nova"
    theirs.mkdir()
    ours.mkdir()
    started = time.perf_counter()
    command = commands.augment_command(params, prepare(source, theirs, params), theirs)
    subprocess.run(command, cwd=theirs, check=True, capture_output=True)
    their_seconds = time.perf_counter() - started
    started = time.perf_counter()
    done = extract_here(params, prepare(source, ours, params), ours)
    our_seconds = time.perf_counter() - started
    record_figure(
        f"{source.name}: solve-field {their_seconds:.2f} s, in-process {our_seconds:.2f} s; "
        f"{done.describe()}"
    )
    return theirs / job_files.AXY_NAME, ours / job_files.AXY_NAME, done


def cards(header: fits.Header, skip: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    return [
        (card.keyword, card.value)
        for card in header.cards
        if card.keyword not in skip and not card.keyword.startswith(STRUCTURE_PREFIXES)
    ]


def assert_same_axy(theirs: Path, ours: Path) -> int:
    """Same sources in the same order, same header cards; returns the number of sources."""
    with fits.open(theirs) as a, fits.open(ours) as b:
        assert cards(b[0].header) == cards(a[0].header)
        assert cards(b[1].header, STRUCTURE) == cards(a[1].header, STRUCTURE)
        assert b[1].columns.names == a[1].columns.names
        assert [c.format for c in b[1].columns] == [c.format for c in a[1].columns]
        assert len(b[1].data) == len(a[1].data)
        for name in a[1].columns.names:
            assert np.array_equal(b[1].data[name], a[1].data[name]), name
        # Byte for byte: no rounding anywhere.
        assert np.asarray(b[1].data).tobytes() == np.asarray(a[1].data).tobytes()
        assert a[0].header["IMAGEW"] > 0 and a[0].header["ANRUN"]
        return len(a[1].data)


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Other formats made from the sample photos (never stored in the repository)."""
    out = tmp_path_factory.mktemp("variants")
    Image.open(APOD / "apod2.jpg").save(out / "apod2.png")
    grey = np.asarray(Image.open(APOD / "apod3.jpg").convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(out / "apod3-16bit.png")
    Image.open(APOD / "apod4.jpg").convert("P", palette=Image.ADAPTIVE).save(out / "apod4.gif")
    Image.open(APOD / "apod1.jpg").save(out / "apod1.tiff")
    grey = np.asarray(Image.open(APOD / "apod5.jpg").convert("L")).astype(np.uint16) * 257
    fits.PrimaryHDU(np.flipud(grey)).writeto(out / "apod5-16bit.fits")  # BITPIX 16, BZERO
    negative = 255 - np.asarray(Image.open(APOD / "apod4.jpg").convert("L"))
    Image.fromarray(negative).save(out / "apod4-negative.png")
    # A column of dots one pixel wide: sources in a line that removelines drops.
    lined = np.asarray(Image.open(APOD / "apod4.jpg").convert("L")).copy()
    for y in range(5, lined.shape[0] - 5, 7):
        lined[y - 1 : y + 2, 299:302] = 255
    Image.fromarray(lined).save(out / "apod4-column.png")
    with fits.open(APOD / "apod4.xyls") as hdus:
        x = np.asarray(hdus[1].data["X"], dtype=float)
        y = np.asarray(hdus[1].data["Y"], dtype=float)
    column_y = np.arange(3.0, 500.0, 7.0)
    x = np.concatenate([x[:300], np.full(len(column_y), 300.0), x[300:]])
    y = np.concatenate([y[:300], column_y, y[300:]])
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="X", format="D", array=x), fits.Column(name="Y", format="D", array=y)]
    )
    table.writeto(out / "lined.xyls")
    return out


@pytest.mark.parametrize("photo", ["apod1", "apod2", "apod3", "apod4", "apod5"])
def test_each_photo_gives_solve_fields_job_axy(photo: str, tmp_path: Path) -> None:
    theirs, ours, done = both_ways(APOD / f"{photo}.jpg", hinted(photo), tmp_path)
    assert assert_same_axy(theirs, ours) == done.sources > 0


def test_blind_defaults_position_parity_and_tweak_reach_the_header(tmp_path: Path) -> None:
    params = parse_solve_params(
        {
            "center_ra": 187.2,
            "center_dec": 56.7,
            "radius": 25,
            "parity": 1,
            "tweak_order": 3,
            "positional_error": 1.5,
            "crpix_center": True,
        }
    )
    theirs, ours, _ = both_ways(APOD / "apod4.jpg", params, tmp_path)
    assert_same_axy(theirs, ours)
    header = fits.getheader(ours)
    assert (header["ANERA"], header["ANPARITY"], header["ANTWEAKO"], header["ANPOSERR"]) == (
        187.2,
        "NEG",
        3,
        1.5,
    )
    assert header["ANCRPIXC"] and header["ANAPPU1"] > header["ANAPPL1"]


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("apod2.png", {}),
        ("apod3-16bit.png", {}),
        ("apod4.gif", {}),
        ("apod1.tiff", {}),
        ("apod5-16bit.fits", {}),
        ("apod5-16bit.fits", {"downsample_factor": 1}),
        ("apod4-negative.png", {"invert": True}),
        ("apod4-negative.png", {"invert": True, "downsample_factor": 1}),
    ],
)
def test_formats_and_options_give_solve_fields_job_axy(
    name: str, changes: dict[str, Any], variants: Path, tmp_path: Path
) -> None:
    photo = name.split("-")[0].split(".")[0]
    theirs, ours, done = both_ways(variants / name, hinted(photo, **changes), tmp_path)
    assert assert_same_axy(theirs, ours) == done.sources > 0


@pytest.mark.parametrize(("photo", "factor"), [("apod1", 1), ("apod5", 1), ("apod2", 4)])
def test_downsampling_factors(photo: str, factor: int, tmp_path: Path) -> None:
    """Full resolution takes the 8-bit path, whose whole-number fluxes tie a lot: the order
    of equal brightnesses is solve-field's own (its quicksort is not stable)."""
    params = hinted(photo, downsample_factor=factor)
    theirs, ours, done = both_ways(APOD / f"{photo}.jpg", params, tmp_path)
    assert assert_same_axy(theirs, ours) == done.sources
    if factor == 1 and photo == "apod1":
        assert done.found > commands.MAX_SOURCES == done.sources  # cut after uniformizing


def test_an_image_without_stars(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("L", (300, 200), 30).save(blank)
    theirs, ours, done = both_ways(blank, SolveParams(), tmp_path)
    assert assert_same_axy(theirs, ours) == done.found == 0 and done.boxes is None


def test_star_lists_are_uniformized_and_cut_in_process(tmp_path: Path) -> None:
    params = hinted("apod4", image_width=719, image_height=507)
    theirs, ours, done = both_ways(APOD / "apod4.xyls", params, tmp_path)
    assert assert_same_axy(theirs, ours) == commands.MAX_SOURCES < done.found
    assert done.boxes is not None


def test_sources_in_a_line_are_removed_from_star_lists(variants: Path, tmp_path: Path) -> None:
    params = parse_solve_params({"image_width": 719, "image_height": 507})
    theirs, ours, done = both_ways(variants / "lined.xyls", params, tmp_path)
    assert_same_axy(theirs, ours)
    assert done.lines_removed >= len(range(3, 500, 7))


def test_only_c_programs_run(tmp_path: Path) -> None:
    """solve-field -v names every program it starts: none is Python here, three are there."""
    params = hinted("apod4")
    ours = tmp_path / "nova"
    ours.mkdir()
    extract_here(params, prepare(APOD / "apod4.jpg", ours, params), ours, verbose=True)
    log = (ours / job_files.LOG_NAME).read_text()
    assert "Running image2xy" in log and "Writing headers to file job.axy" in log
    assert "python3" not in log and "astrometry.util" not in log
    theirs = tmp_path / "solve-field"
    theirs.mkdir()
    command = commands.augment_command(params, prepare(APOD / "apod4.jpg", theirs, params), theirs)
    shown = subprocess.run(
        [command[0], "-v", *command[1:]], cwd=theirs, capture_output=True, text=True, check=True
    )
    for helper in ("image2pnm", "removelines", "uniformize"):
        assert f"python3 -m astrometry.util.{helper}" in shown.stdout + shown.stderr


def solved_wcs(work_dir: Path, params: SolveParams, source: Path, fast: bool) -> fits.Header:
    work_dir.mkdir()
    outcome = solver.solve(
        params,
        prepare(source, work_dir, params),
        work_dir,
        index_dirs=[Path("/usr/share/astrometry")],
        time_limit=120,
        fast_extraction=fast,
    )
    assert outcome.solved, outcome.reason
    log = (work_dir / job_files.LOG_NAME).read_text()
    assert ("in-process extraction:" in log) == fast
    return fits.getheader(work_dir / job_files.WCS_NAME)


@pytest.mark.parametrize("photo", ["apod3", "apod5"])
def test_the_solution_is_the_same(photo: str, tmp_path: Path) -> None:
    """apod5 also takes the retry at full resolution (46 sources after downsampling)."""
    params = hinted(photo)
    theirs = solved_wcs(tmp_path / "solve-field", params, APOD / f"{photo}.jpg", fast=False)
    ours = solved_wcs(tmp_path / "nova", params, APOD / f"{photo}.jpg", fast=True)
    keys = [k for k in theirs if k[:2] in ("CR", "CD", "A_", "B_", "AP", "BP") or k == "IMAGEW"]
    assert len(keys) > 10
    assert [(k, ours[k]) for k in keys] == [(k, theirs[k]) for k in keys]


def test_source_extractor_and_wcs_headers_go_to_solve_field(tmp_path: Path) -> None:
    jpeg = prepare(APOD / "apod4.jpg", tmp_path, SolveParams())
    reason = extraction.unsupported_reason(SolveParams(use_sextractor=True), jpeg)
    assert reason == "SourceExtractor was asked for"
    assert extraction.unsupported_reason(SolveParams(), jpeg) is None  # every tool is here
    with_wcs = tmp_path / "wcs.fits"
    grey = np.asarray(Image.open(APOD / "apod4.jpg").convert("L"))
    fits.PrimaryHDU(grey, header=fits.Header({"CTYPE1": "RA---TAN"})).writeto(with_wcs)
    prepared = prepare(with_wcs, tmp_path, SolveParams())
    with pytest.raises(extraction.Unsupported, match="WCS header"):
        extract_here(SolveParams(), prepared, tmp_path)


def test_unsupported_and_failing_cases_fall_back_to_solve_field(
    variants: Path, tmp_path: Path
) -> None:
    """Sources in a line, and a converter that fails: solve-field writes job.axy, the log
    says why, and the job goes on."""
    params = hinted("apod4", downsample_factor=1)
    lined = tmp_path / "lined"
    lined.mkdir()
    prepared = prepare(variants / "apod4-column.png", lined, params)
    with pytest.raises(extraction.Unsupported, match="in lines"):
        extract_here(params, prepared, lined)
    reference = tmp_path / "reference"
    reference.mkdir()
    command = commands.augment_command(params, prepare(variants / "apod4-column.png", reference,
                                                     params), reference)  # fmt: skip
    subprocess.run(command, cwd=reference, check=True, capture_output=True)
    for work_dir, kind in ((lined, "png"), (tmp_path / "mislabelled", "jpeg")):
        work_dir.mkdir(exist_ok=True)
        # "jpeg" makes jpegtopnm fail on the PNG; solve-field sniffs the type itself.
        given = replace(prepare(variants / "apod4-column.png", work_dir, params), kind=kind)
        code = solver.extract_sources(
            params,
            given,
            work_dir,
            work_dir / job_files.LOG_NAME,
            time.monotonic() + 120,
            fast=True,
        )
        assert code == 0
        log = (work_dir / job_files.LOG_NAME).read_text()
        assert "; extracting with solve-field --just-augment" in log
        assert_same_axy(reference / job_files.AXY_NAME, work_dir / job_files.AXY_NAME)
    assert "removelines drops" in (lined / job_files.LOG_NAME).read_text()
    mislabelled = (tmp_path / "mislabelled" / job_files.LOG_NAME).read_text()
    assert "in-process extraction failed: jpegtopnm failed" in mislabelled
