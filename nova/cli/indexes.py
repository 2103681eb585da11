"""``nova indexes``: which index files the workers would use, and which field widths they cover."""

from __future__ import annotations

from pathlib import Path

import click
from flask.cli import with_appcontext

from nova.extensions import settings


@click.command("indexes")
@click.argument("directories", nargs=-1, type=click.Path(path_type=Path))
@with_appcontext
def indexes_command(directories: tuple[Path, ...]) -> None:
    """List the index files (NOVA_INDEX_DIRS, or DIRECTORIES) and the field widths they cover.

    Exits with status 1 when no index file is found at all.
    """
    from nova.engine import indexes

    dirs = list(directories) or list(settings().index_dirs)
    scan = indexes.scan_index_dirs(dirs)
    click.echo("index directories: " + ", ".join(str(d) for d in dirs))
    if scan:
        rows = [("file", "id", "quads (arcmin)", "stars", "size", "sky")]
        rows += [
            (
                str(index.path),
                str(index.index_id),
                f"{index.scale_lower:.1f}-{index.scale_upper:.1f}",
                "" if index.stars is None else f"{index.stars:,}",
                f"{index.size / 1e6:.1f} MB",
                index.sky,
            )
            for index in scan
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        right = {1, 3, 4}
        for row in rows:
            cells = [
                cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            ]
            click.echo("  ".join(cells).rstrip())
        total = sum(index.size for index in scan)
        click.echo(f"{len(scan)} index files, {total / 1e6:.1f} MB")
    if scan.problems:
        click.echo("\nproblems:")
        for problem in scan.problems:
            click.echo(f"  {problem.path}: {problem.message}")
    click.echo("\ncoverage (field width: index ids whose quads are 10-100% of the field):")
    for band in indexes.coverage(scan):
        width = indexes.format_degrees(band.width).rjust(6)
        if band.covered:
            ids = ", ".join(str(i) for i in band.index_ids)
            sky = "" if band.full_sky else " (part of the sky only)"
            click.echo(f"  {width}  covered by {ids}{sky}")
        else:
            click.echo(f"  {width}  NOT covered")
    click.echo("")
    for line in indexes.summary(scan):
        click.echo(line)
    if not scan:
        raise SystemExit(1)
