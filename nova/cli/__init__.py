"""The ``nova`` command: database set-up, users, workers, and the whole stack run bare.

Each command lives in the module named after it; this package builds the group (the
console script ``nova = nova.cli:main``) and adds them to it.
"""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import FlaskGroup

from nova import create_app
from nova.cli import db, indexes, purge, solve, up, users, worker
from nova.config import ConfigError


def create_app_or_explain() -> Flask:
    """The app, or a malformed setting said in one line (exit status 1), not a traceback."""
    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(
    cls=FlaskGroup,
    create_app=create_app_or_explain,
    add_version_option=False,
    load_dotenv=False,
    set_debug_flag=False,
)
def main() -> None:
    """Nova plate-solving service."""


for command in (
    db.init_db_command,
    users.create_user_command,
    users.reset_api_key_command,
    worker.worker_command,
    purge.purge_command,
    up.up_command,
    indexes.indexes_command,
    solve.solve_command,
):
    main.add_command(command)
