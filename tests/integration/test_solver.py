"""The engine wrapper: command mapping from parameters, and the hard wall-clock limit."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from nova.engine.commands import augment_command, augment_options, engine_config
from nova.engine.input_formats import PreparedInput
from nova.engine.params import parse_solve_params
from nova.engine.process import SolveTimeout, run_with_deadline
from tests.support.paths import REPO, SHARED_DATA
from tests.support.processes import wait_for

IMAGE = PreparedInput(kind="jpeg", path=Path("/data/in.jpg"), width=800, height=600)
STARS = PreparedInput(kind="xylist", path=Path("/w/stars.xyls"), width=1000, height=700)
FITS = PreparedInput(kind="fits", path=Path("/data/in.fits"), width=80, height=60, fits_extension=2)


def option(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_defaults_follow_nova() -> None:
    cmd = augment_command(parse_solve_params({}), IMAGE, Path("/w"))
    assert cmd[:2] == ["solve-field", "--just-augment"]
    assert option(cmd, "--objs") == "1000"
    assert option(cmd, "--downsample") == "2"
    assert option(cmd, "--tweak-order") == "2"
    assert (option(cmd, "--scale-low"), option(cmd, "--scale-high")) == ("0.1", "180.0")
    assert option(cmd, "--scale-units") == "degwidth"
    assert "--tag-all" in cmd and "--parity" not in cmd and "--ra" not in cmd
    assert cmd[-1] == "/data/in.jpg"


def test_zero_hints_are_passed_and_flags_map() -> None:
    params = parse_solve_params(
        {
            "center_ra": 0,
            "center_dec": 0,
            "radius": 2,
            "scale_lower": 0,
            "scale_upper": 3,
            "parity": 0,
            "tweak_order": 0,
            "positional_error": 1.5,
            "crpix_center": True,
            "invert": True,
            "use_sextractor": True,
            "downsample_factor": 1,
        }
    )
    cmd = augment_command(params, IMAGE, Path("/w"))
    assert (option(cmd, "--ra"), option(cmd, "--dec"), option(cmd, "--radius")) == (
        "0.0",
        "0.0",
        "2.0",
    )
    assert option(cmd, "--scale-low") == "0.0"
    assert option(cmd, "--parity") == "pos"
    assert "--no-tweak" in cmd and "--tweak-order" not in cmd
    assert option(cmd, "--pixel-error") == "1.5"
    assert {"--crpix-center", "--invert", "--use-source-extractor"} <= set(cmd)
    assert "--downsample" not in cmd
    negative = augment_command(parse_solve_params({"parity": 1}), IMAGE, Path("/w"))
    assert option(negative, "--parity") == "neg"


def test_estimate_error_and_units() -> None:
    params = parse_solve_params(
        {"scale_type": "ev", "scale_est": 50, "scale_err": 10, "scale_units": "focalmm"}
    )
    cmd = augment_command(params, IMAGE, Path("/w"))
    assert option(cmd, "--scale-units") == "focalmm"
    assert float(option(cmd, "--scale-low") or 0) == pytest.approx(45)
    assert float(option(cmd, "--scale-high") or 0) == pytest.approx(55)


def test_star_lists_and_fits_extensions() -> None:
    cmd = augment_command(parse_solve_params({"invert": True}), STARS, Path("/w"))
    assert (option(cmd, "--width"), option(cmd, "--height")) == ("1000", "700")
    assert "--downsample" not in cmd and "--invert" not in cmd
    cmd = augment_command(parse_solve_params({}), FITS, Path("/w"))
    assert "--fits-image" in cmd and option(cmd, "--extension") == "2"


def test_engine_config_lists_every_index_directory() -> None:
    text = engine_config([Path("/usr/share/astrometry"), Path("/mnt/4200")], 300)
    assert text.splitlines() == [
        "add_path /usr/share/astrometry",
        "add_path /mnt/4200",
        "autoindex",
        "cpulimit 300",
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_deadline_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A child that ignores SIGTERM and its own background child are both gone at the deadline."""
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pid_file}; trap '' TERM; while true; do sleep 1; done"
    started = time.monotonic()
    with pytest.raises(SolveTimeout):
        run_with_deadline(["sh", "-c", script], tmp_path, tmp_path / "log", time.monotonic() + 1.0)
    elapsed = time.monotonic() - started
    # Far below the child's endless loop and its child's 300 s, even on a busy machine.
    assert elapsed < 60
    grandchild = int(pid_file.read_text())
    assert wait_for(lambda: not _alive(grandchild), 60, 0.05)
    assert (tmp_path / "log").read_text().startswith("$ sh -c")


def test_exit_status_and_output_are_kept(tmp_path: Path) -> None:
    code = run_with_deadline(
        ["sh", "-c", "echo hello; exit 3"], tmp_path, tmp_path / "log", time.monotonic() + 10
    )
    assert code == 3
    assert "hello" in (tmp_path / "log").read_text()


@pytest.mark.engine
def test_engine_and_every_tycho2_index_are_installed() -> None:
    """The engine tests need these; their absence must fail loudly, never skip."""
    import shutil

    for tool in ("solve-field", "astrometry-engine", "image2xy", "source-extractor"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/install-system.sh"
    index_files = sorted(Path("/usr/share/astrometry").glob("index-tycho2-*.fits"))
    scales = sorted(int(path.name.split("-")[2].split(".")[0]) for path in index_files)
    assert scales == list(range(7, 20)), scales


@pytest.mark.engine
def test_objects_in_field_carry_messier_numbers_and_common_names(tmp_path: Path) -> None:
    """A 2-degree field on the Orion Nebula, listed by Debian's plot-constellations."""
    import json

    from astropy.io import fits

    from nova.engine.job_files import ANNOTATIONS_NAME
    from nova.engine.solver import objects_in_field

    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN",
        CTYPE2="DEC--TAN",
        CRVAL1=83.82,
        CRVAL2=-5.39,
        CRPIX1=500.5,
        CRPIX2=500.5,
        CD1_1=-0.002,
        CD1_2=0.0,
        CD2_1=0.0,
        CD2_2=0.002,
        IMAGEW=1000,
        IMAGEH=1000,
    )
    fits.PrimaryHDU(header=header).writeto(tmp_path / "wcs.fits")
    names = objects_in_field(tmp_path)
    assert {"NGC 1976", "Orion Nebula", "M 42", "M 43"} <= set(names)
    annotations = json.loads((tmp_path / ANNOTATIONS_NAME).read_text())
    m42 = next(a for a in annotations if "M 42" in a["names"])
    assert m42["type"] == "ngc" and m42["radius"] > 0
    assert abs(m42["pixelx"] - 500) < 100 and abs(m42["pixely"] - 500) < 100


def test_hinted_solves_and_star_lists_are_quick() -> None:
    """What goes on the quick-solve queue: a narrow scale or position hint, or a star list;
    a "hint" as wide as a blind solve waits with the blind solves (issue 16, M7)."""
    from nova.services.queueing import is_quick

    assert not is_quick(parse_solve_params({}), "jpeg")  # nova's blind default
    assert is_quick(parse_solve_params({"scale_lower": 26, "scale_upper": 40}), "jpeg")
    assert is_quick(
        parse_solve_params({"scale_type": "ev", "scale_est": 2, "scale_err": 20}), "png"
    )
    assert not is_quick(parse_solve_params({"scale_lower": 0, "scale_upper": 180}), "jpeg")
    assert not is_quick(parse_solve_params({"scale_lower": 0.5, "scale_upper": 170}), "jpeg")
    assert not is_quick(
        parse_solve_params({"scale_units": "arcsecperpix", "scale_lower": 0.1, "scale_upper": 180}),
        "png",
    )
    assert is_quick(parse_solve_params({"center_ra": 0, "center_dec": 0, "radius": 5}), "fits")
    assert not is_quick(parse_solve_params({"center_ra": 0, "center_dec": 0, "radius": 90}), "fits")
    assert is_quick(parse_solve_params({}), "xylist")


@pytest.mark.engine
def test_job_axy_options_reach_the_warm_engine_as_the_engine_reads_them(tmp_path: Path) -> None:
    """solve-field --just-augment writes the options into job.axy; the warm engine reads the
    same header keys astrometry-engine reads."""
    import subprocess

    from nova.engine.job_files import AXY_NAME
    from nova.engine.warm_engine import read_axy

    apod = SHARED_DATA
    image = apod / "apod" / "apod4.jpg"
    assert image.is_file(), image
    prepared = PreparedInput(kind="jpeg", path=image, width=719, height=507)
    params = parse_solve_params(
        {
            "scale_units": "arcsecperpix",
            "scale_lower": 150,
            "scale_upper": 190,
            "center_ra": 187.2,
            "center_dec": 56.7,
            "radius": 25,
            "parity": 1,
            "tweak_order": 3,
            "positional_error": 1.5,
        }
    )
    command = augment_command(params, prepared, tmp_path)
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    job = read_axy(tmp_path / AXY_NAME)
    assert (job.width, job.height) == (719, 507)
    assert (job.scale_low, job.scale_high) == pytest.approx((150, 190))
    assert job.position == pytest.approx((187.2, 56.7, 25))
    assert (job.parity, job.tweak, job.tweak_order, job.positional_error) == ("neg", True, 3, 1.5)
    assert job.uniformize and not job.deduplicate and not job.unsupported
    # The engine's depth steps: sources 1-10, 11-20, ... up to 200.
    slices = job.slices()
    assert slices[0] == (0, 10) and slices[-1] == (190, 200) and len(slices) == 20
    crpix = augment_command(replace(params, crpix_center=True), prepared, tmp_path)
    subprocess.run(crpix, cwd=tmp_path, check=True, capture_output=True)
    assert read_axy(tmp_path / AXY_NAME).unsupported == ("ANCRPIXC",)


def test_augment_command_is_the_header_options_plus_the_input() -> None:
    """The in-process extraction writes the header with the same options as solve-field."""
    params = parse_solve_params({"center_ra": 10, "center_dec": 20, "radius": 3, "parity": 0})
    options = augment_options(params, Path("/w"))
    assert augment_command(params, IMAGE, Path("/w")) == [
        "solve-field",
        "--just-augment",
        *options,
        "--downsample",
        "2",
        "/data/in.jpg",
    ]
    assert option(options, "--ra") == "10.0" and option(options, "--parity") == "pos"
    assert "--downsample" not in options and "--width" not in options


def test_fast_extraction_is_on_unless_the_setting_turns_it_off(tmp_path: Path) -> None:
    """The worker passes NOVA_FAST_EXTRACTION to solve; a caller without settings (the CLI's
    library use, the benchmark) gets the in-process extraction."""
    import inspect

    from nova.config import Settings
    from nova.engine.solver import solve

    assert inspect.signature(solve).parameters["fast_extraction"].default is True
    assert Settings.from_env({"NOVA_DATA_DIR": str(tmp_path)}).fast_extraction
    config = Settings.from_env({"NOVA_DATA_DIR": str(tmp_path), "NOVA_FAST_EXTRACTION": "false"})
    assert config.fast_extraction is False


def test_a_killed_worker_takes_its_commands_along(tmp_path: Path) -> None:
    """kill -9 of the process running a command (it runs in its own session) ends it too:
    the death signal is set (by setpriv, or in the child) before the command starts."""
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "command.pid"
    script = (
        "import time; from pathlib import Path; from nova.engine.solver import run_with_deadline; "
        f"run_with_deadline(['sh', '-c', 'echo $$ > {pid_file}; exec sleep 300'], "
        f"Path('{tmp_path}'), Path('{tmp_path}') / 'log', time.monotonic() + 60)"
    )
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    assert wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 120, 0.05)
    command = int(pid_file.read_text())
    assert _alive(command)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=60)
    assert wait_for(lambda: not _alive(command), 60, 0.05)
