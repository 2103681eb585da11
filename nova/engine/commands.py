"""The engine's command lines and configuration, nova's mapping of a job's parameters onto
``solve-field`` and ``astrometry-engine``: one home for the options every caller shares."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nova.engine.input_formats import PreparedInput
from nova.engine.job_files import AXY_NAME, CORR_NAME, MATCH_NAME, RDLS_NAME, WCS_NAME
from nova.engine.params import SolveParams

MAX_SOURCES = 1000  # nova's --objs
# solve-field's option to leave a FITS image's own WCS alone: with header hints on, Nova
# checks that WCS itself and asks the engine to verify it only when it is sound.
NO_VERIFY = "--no-verify"


def engine_config(index_dirs: Sequence[Path], cpulimit: int) -> str:
    """The engine's configuration: every index file found in the configured directories."""
    lines = [f"add_path {directory}" for directory in index_dirs]
    # The cpulimit is only a second line of defence; the wall clock is what holds.
    lines += ["autoindex", f"cpulimit {cpulimit}"]
    return "\n".join(lines) + "\n"


def engine_command(config_path: Path) -> list[str]:
    """``astrometry-engine`` solving ``job.axy`` in its directory."""
    return ["astrometry-engine", "-c", str(config_path), AXY_NAME]


def working_options(work_dir: Path) -> list[str]:
    """solve-field's base options: no plots, everything in (and over) ``work_dir``."""
    return ["--no-plots", "--overwrite", "--dir", str(work_dir), "--temp-dir", str(work_dir)]


def image_extraction_options(params: SolveParams) -> list[str]:
    """How image2xy finds an image's sources. No --downsample 1: it would leave the 8-bit
    code path."""
    options = []
    if params.downsample_factor > 1:
        options += ["--downsample", str(params.downsample_factor)]
    if params.invert:
        options.append("--invert")
    return options


def augment_command(params: SolveParams, prepared: PreparedInput, work_dir: Path) -> list[str]:
    """The ``solve-field --just-augment`` command for these parameters (nova's mapping)."""
    cmd = ["solve-field", "--just-augment", *augment_options(params, work_dir)]
    if prepared.is_star_list:
        cmd += ["--width", str(prepared.width), "--height", str(prepared.height)]
    else:
        cmd += image_extraction_options(params)
        if params.use_sextractor:
            cmd.append("--use-source-extractor")
        if prepared.kind == "fits":
            cmd += ["--fits-image", "--extension", str(prepared.fits_extension)]
    cmd.append(str(prepared.path))
    return cmd


def augment_sources_command(
    options: Sequence[str], width: int, height: int, sources: Path, after: Sequence[str] = ()
) -> list[str]:
    """``solve-field --just-augment`` writing ``job.axy`` for a source list that is extracted,
    sorted and uniformized already: its sources are kept as they are."""
    return [
        "solve-field",
        "--just-augment",
        *options,
        "--width",
        str(width),
        "--height",
        str(height),
        "--no-remove-lines",
        "--uniformize",
        "0",
        *after,
        str(sources),
    ]


def augment_options(params: SolveParams, work_dir: Path) -> list[str]:
    """solve-field's options for the header of ``job.axy``: output names, ``--objs``, the
    hints and the engine's settings; everything but the input and how to extract it."""
    outputs = ["--axy", AXY_NAME, "--wcs", WCS_NAME, "--corr", CORR_NAME, "--rdls", RDLS_NAME]
    outputs += ["--match", MATCH_NAME, "--solved", "none", "--new-fits", "none"]
    outputs += ["--index-xyls", "none", "--objs", str(MAX_SOURCES), "--tag-all"]
    return [*working_options(work_dir), *outputs, *hint_options(params)]


def hint_options(params: SolveParams) -> list[str]:
    """The job's scale and position hints and the engine's settings (parity, tweak...)."""
    cmd = []
    bounds = params.scale_bounds()
    if bounds is not None:
        cmd += ["--scale-units", params.scale_units]
        cmd += ["--scale-low", repr(bounds[0]), "--scale-high", repr(bounds[1])]
    if params.has_position_hint:
        # Tested with "is not None", unlike nova: RA 0 / Dec 0 are real positions.
        cmd += ["--ra", repr(params.center_ra), "--dec", repr(params.center_dec)]
        cmd += ["--radius", repr(params.radius)]
    if params.parity in (0, 1):
        cmd += ["--parity", "pos" if params.parity == 0 else "neg"]
    if params.tweak_order == 0:
        cmd.append("--no-tweak")
    else:
        cmd += ["--tweak-order", str(params.tweak_order)]
    if params.positional_error is not None:
        cmd += ["--pixel-error", repr(params.positional_error)]
    if params.crpix_center:
        cmd.append("--crpix-center")
    return cmd
