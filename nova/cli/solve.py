"""``nova solve FILE...``: solve files here and now, without the service (nova/cli/local_solve)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from nova.config import Settings
    from nova.engine.params import SolveParams

PARITY_CHOICES = {"pos": 0, "neg": 1, "both": 2}


@click.command("solve")  # no app: no database, no redis
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--scale-low", type=float, help="Lower bound of the field size (--scale-units).")
@click.option("--scale-high", type=float, help="Upper bound of the field size (--scale-units).")
@click.option(
    "--scale-units",
    default="degwidth",
    show_default=True,
    help="degwidth, arcminwidth, arcsecperpix or focalmm (nova's names and aliases).",
)
@click.option("--ra", type=float, help="Position hint: field centre RA, degrees.")
@click.option("--dec", type=float, help="Position hint: field centre Dec, degrees.")
@click.option("--radius", type=float, help="Position hint: search radius, degrees.")
@click.option(
    "--parity", type=click.Choice(list(PARITY_CHOICES)), default="both", show_default=True
)
@click.option("--downsample", type=int, help="Downsample factor before extraction [2].")
@click.option(
    "--time-limit",
    type=click.FloatRange(min=1),
    help="Seconds per file [NOVA_SOLVE_TIME_LIMIT, 300].",
)
@click.option(
    "--index-dir",
    "index_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Index directory (repeatable) [NOVA_INDEX_DIRS].",
)
@click.option(
    "--no-header-hints",
    is_flag=True,
    help="Ignore scale/position hints in the file's header (FITS, XISF, EXIF).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, per line.")
@click.option(
    "--wcs", "wcs_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the WCS here."
)
@click.option(
    "--outdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each solved file's products here: NAME.wcs, .corr, .rdls, .axy.",
)
def solve_command(
    files: tuple[Path, ...],
    scale_low: float | None,
    scale_high: float | None,
    scale_units: str,
    ra: float | None,
    dec: float | None,
    radius: float | None,
    parity: str,
    downsample: int | None,
    time_limit: float | None,
    index_dirs: tuple[Path, ...],
    no_header_hints: bool,
    as_json: bool,
    wcs_out: Path | None,
    outdir: Path | None,
) -> None:
    """Solve FILES now, with the workers' engine path: no redis, database or web server.

    Exit status: 0 when every file solved, 1 when some did not, 2 for bad input or usage.
    """
    from nova.cli import local_solve

    if wcs_out is not None and len(files) > 1:
        raise click.UsageError("--wcs names one output file: give one FILE, or use --outdir")
    # nova's parameter names, validated by the rules the API applies; a bound not given
    # keeps nova's default (0.1 to 180 degrees wide), as does every option left out.
    hints = {
        "scale_units": scale_units,
        "scale_lower": scale_low,
        "scale_upper": scale_high,
        "center_ra": ra,
        "center_dec": dec,
        "radius": radius,
        "parity": PARITY_CHOICES[parity],
        "downsample_factor": downsample,
        "use_header_hints": not no_header_hints,
    }
    params, config = _params_and_settings(hints)
    directories = list(index_dirs) or list(config.index_dirs)
    missing = [str(d) for d in directories if not d.is_dir()]
    if missing:
        raise click.UsageError(f"no such index directory: {', '.join(missing)}")
    results = []
    for path in files:
        result = local_solve.solve_file(
            path,
            params,
            index_dirs=directories,
            time_limit=time_limit or config.solve_time_limit,
            config=config,
            outdir=outdir,
            wcs_out=wcs_out,
        )
        results.append(result)
        click.echo(json.dumps(result.as_json()) if as_json else result.summary())
        if result.status == local_solve.BAD_INPUT:
            click.echo(f"nova solve: {path}: {result.reason}", err=True)
    raise SystemExit(local_solve.exit_status(results))


def _params_and_settings(hints: dict[str, Any]) -> tuple[SolveParams, Settings]:
    """The solve's parameters and the workers' settings, or a usage error saying what is wrong."""
    from nova.config import ConfigError, Settings
    from nova.engine.params import ParamError, parse_solve_params

    try:
        params = parse_solve_params(hints)
        # The same settings the workers read; nothing is signed, so no secret key is needed.
        config = Settings.from_env(
            dict(os.environ, NOVA_SECRET_KEY=os.environ.get("NOVA_SECRET_KEY") or "unused")
        )
    except (ParamError, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    return params, config
