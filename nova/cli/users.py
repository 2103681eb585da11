"""``nova create-user`` and ``nova reset-api-key``: accounts made from the command line."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from nova.services.accounts import create_user, reset_api_key


@click.command("create-user")
@click.argument("email")
@click.option("--admin", is_flag=True, help="Give the user operator rights.")
@with_appcontext
def create_user_command(email: str, admin: bool) -> None:
    """Create a user and print its API key (shown only this once)."""
    try:
        user, key = create_user(email, is_admin=admin)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created user {user.id} <{user.email}>")
    click.echo(f"API key: {key}")


@click.command("reset-api-key")
@click.argument("email")
@with_appcontext
def reset_api_key_command(email: str) -> None:
    """Give a user a new API key (the old one stops working) and print it."""
    try:
        key = reset_api_key(email)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"API key: {key}")
