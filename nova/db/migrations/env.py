"""Alembic environment: migrations run on the app's own engine and metadata.

`nova init-db` runs them; developers create new ones with `nova db migrate -m "..."`.
Logging is left to the app (no fileConfig), so a migration never silences Nova's loggers.
"""

from __future__ import annotations

from alembic import context
from flask import current_app


def run_migrations_offline() -> None:
    """`nova db upgrade --sql`: print the SQL for a DBA instead of running it."""
    migrate = current_app.extensions["migrate"]
    context.configure(
        url=migrate.db.engine.url.render_as_string(hide_password=False),
        target_metadata=migrate.db.metadata,
        literal_binds=True,
        **migrate.configure_args,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    migrate = current_app.extensions["migrate"]
    with migrate.db.engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=migrate.db.metadata, **migrate.configure_args
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
