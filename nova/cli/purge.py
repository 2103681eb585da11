"""``nova purge``: delete old anonymous and failed uploads now (the workers do it hourly)."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from nova.extensions import settings
from nova.services import retention


@click.command("purge")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=None,
    help="Age in days (default: NOVA_RETENTION_DAYS).",
)
@with_appcontext
def purge_command(days: int | None) -> None:
    """Delete anonymous and failed uploads older than DAYS, with their products and files."""
    days = days or settings().retention_days
    if not days:
        raise click.ClickException("give --days N, or set NOVA_RETENTION_DAYS")
    removed = retention.purge(days)
    click.echo(
        f"purged uploads older than {days} days: {removed.submissions} submissions, "
        f"{removed.images} images, {removed.jobs} jobs, {removed.files} files and directories"
    )
