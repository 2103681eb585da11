"""``nova init-db``, and the schema check every long-running command makes first."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from nova.db.schema import SchemaNotCurrent, check_schema, init_database
from nova.extensions import db


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create or migrate the database to this release's schema (safe to run again)."""
    done = init_database()
    click.echo(f"database ready: {db.engine.url.render_as_string(hide_password=True)} ({done})")


def require_current_schema() -> None:
    """Refuse to start on a database that `nova init-db` has not migrated."""
    try:
        check_schema()
    except SchemaNotCurrent as exc:
        raise click.ClickException(str(exc)) from None
