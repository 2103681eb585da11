"""``nova solve FILE...`` run bare, as a CI job or a script runs it: a real process, the real
engine and index files, no redis, no database, no web server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from nova.engine.input_formats import UnsupportedInput
from nova.engine.inputs import prepare_input
from tests.support.processes import free_port
from tests.support.samples import SolveSamples

pytestmark = pytest.mark.engine

# apod4 (nova-service.md's sample): centre RA 187.18, Dec 56.71, about 34 x 24 degrees.
APOD4_RA, APOD4_DEC = 187.18, 56.71


def nova_solve(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``nova solve ARGS`` as the image runs it: production settings, no secret key, and a
    redis URL where nothing listens (nova solve must not need one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env |= {"NOVA_ENV": "production", "NOVA_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    return subprocess.run(
        [sys.executable, "-m", "nova", "solve", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_apod4(calibration: dict[str, float]) -> None:
    assert list(calibration) == [
        "ra", "dec", "width_arcsec", "height_arcsec", "radius", "pixscale", "orientation",
        "parity",
    ]  # fmt: skip
    assert calibration["ra"] == pytest.approx(APOD4_RA, abs=0.1)
    assert calibration["dec"] == pytest.approx(APOD4_DEC, abs=0.1)
    assert calibration["pixscale"] == pytest.approx(169, rel=0.02)
    assert calibration["width_arcsec"] / 3600 == pytest.approx(34, rel=0.05)
    assert calibration["parity"] in (1.0, -1.0)


def test_solved_file_exits_0_with_nova_calibration_and_products(
    solve_samples: SolveSamples, tmp_path: Path
) -> None:
    wcs = tmp_path / "out" / "apod4.wcs"
    result = nova_solve(solve_samples.solvable, "--json", "--wcs", wcs)
    assert result.returncode == 0, result.stderr
    (line,) = json_lines(result)
    assert line["file"] == str(solve_samples.solvable)
    assert line["status"] == "solved" and line["failure_reason"] is None
    assert 0 < line["seconds"] < 300 and line["sources"] > 50
    assert_apod4(line["calibration"])
    assert line["products"] == {"wcs": str(wcs)}
    header = fits.getheader(wcs)
    assert header["CTYPE1"].startswith("RA---TAN")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        centre = WCS(header).pixel_to_world_values(header["IMAGEW"] / 2, header["IMAGEH"] / 2)
    assert centre == pytest.approx((APOD4_RA, APOD4_DEC), abs=0.1)


def test_noise_exits_1_with_the_reason_and_outdir_keeps_the_log(
    solve_samples: SolveSamples, tmp_path: Path
) -> None:
    result = nova_solve(solve_samples.noise, "--json", "--outdir", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = json_lines(result)
    assert line["status"] == "failure" and line["calibration"] is None
    assert line["failure_reason"] == "No stars were detected in the image."
    assert line["products"]["log"] == str(tmp_path / "noise.log")
    assert "wcs" not in line["products"]
    assert "$ " in (tmp_path / "noise.log").read_text()  # the commands the engine ran


def test_truncated_file_exits_2_with_a_message(solve_samples: SolveSamples) -> None:
    result = nova_solve(solve_samples.truncated)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cut.fits: The FITS file is truncated" in result.stderr
    assert "cannot be read" in result.stdout
    with pytest.raises(UnsupportedInput, match="truncated"):
        prepare_input(
            solve_samples.truncated,
            solve_samples.directory,
            max_pixels=10**8,
            max_uncompressed_bytes=10**8,
            max_ratio=1000,
            max_stars=100_000,
        )


def test_several_files_one_line_each_and_the_worst_exit_status(
    solve_samples: SolveSamples, apod: Path, tmp_path: Path
) -> None:
    # A photo and a star list, solved: 0; products named after each file in --outdir.
    stars = tmp_path / "stars.xyls"
    stars.write_bytes((apod / "apod4.xyls").read_bytes())
    outdir = tmp_path / "out"
    result = nova_solve(apod / "apod4.jpg", stars, "--outdir", outdir)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(": solved in " in line for line in lines), lines
    assert {p.name for p in outdir.glob("*.wcs")} == {"apod4.wcs", "stars.wcs"}
    # One solved, one not: 1. One unreadable among them: 2 (and the others still solve).
    result = nova_solve(solve_samples.solvable, solve_samples.noise, "--json")
    assert result.returncode == 1
    assert [line["status"] for line in json_lines(result)] == ["solved", "failure"]
    result = nova_solve(solve_samples.truncated, solve_samples.solvable, "--json")
    assert result.returncode == 2
    assert [line["status"] for line in json_lines(result)] == ["error", "solved"]


def test_hints_reach_the_engine_and_the_time_limit_holds(apod: Path, tmp_path: Path) -> None:
    hinted = nova_solve(
        apod / "apod4.jpg", "--json", "--outdir", tmp_path, "--scale-units", "degw",
        "--scale-low", "30", "--scale-high", "40", "--ra", "187", "--dec", "57",
        "--radius", "25", "--parity", "neg", "--downsample", "3",
    )  # fmt: skip
    assert hinted.returncode == 0, hinted.stdout + hinted.stderr
    (line,) = json_lines(hinted)
    assert_apod4(line["calibration"])
    # The engine's own record of what it was given (the workers' mapping of nova's fields).
    commands = [c for c in (tmp_path / "apod4.log").read_text().splitlines() if c[:2] == "$ "]
    augment = next(c for c in commands if "--just-augment" in c)
    for option in (
        "--scale-units degwidth --scale-low 30.0 --scale-high 40.0",
        "--ra 187.0 --dec 57.0 --radius 25.0",
        "--parity neg",
    ):
        assert option in augment, augment
    assert any("--downsample 3" in c for c in commands), commands
    # apod5 takes ~25 s blind: a 2 s limit stops it, within the limit.
    result = nova_solve(apod / "apod5.jpg", "--json", "--time-limit", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = json_lines(result)
    assert line["failure_reason"] == "Stopped after the time limit of 2 s without a solution."
    assert line["seconds"] < 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.fits"], "'missing.fits' does not exist"),
        ([], "Missing argument 'FILES...'"),
        (["{solvable}", "{noise}", "--wcs", "x.wcs"], "--wcs names one output file"),
        (["{solvable}", "--ra", "10"], "a position hint needs center_ra, center_dec and radius"),
        (["{solvable}", "--scale-low", "5", "--scale-high", "1"], "scale_upper: must not be"),
        (["{solvable}", "--parity", "up"], "Invalid value for '--parity'"),
        (["{solvable}", "--downsample", "0"], "downsample_factor: must be between 1 and 32"),
        (["{solvable}", "--index-dir", "/nonexistent"], "no such index directory: /nonexistent"),
    ],
)
def test_bad_usage_exits_2_with_a_message(
    solve_samples: SolveSamples, tmp_path: Path, args: list[str], message: str
) -> None:
    names = {"solvable": solve_samples.solvable, "noise": solve_samples.noise}
    result = nova_solve(*(arg.format(**names) for arg in args), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_a_malformed_setting_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """Every nova command names the bad setting and how to fix it, and exits non-zero."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env |= {"NOVA_DATA_DIR": str(tmp_path), "NOVA_MAX_STARS": "0"}
    for command in (["init-db"], ["worker", "--burst"], ["purge"]):
        result = subprocess.run(
            [sys.executable, "-m", "nova", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, (command, result.stderr)
        assert "NOVA_MAX_STARS must be at least 1, got 0" in result.stderr, command
        assert "Traceback" not in result.stderr, result.stderr
