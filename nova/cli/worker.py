"""``nova worker``: check the schema and settings, pick up work left pending, then run the
worker loop (nova/worker/loop.py)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from nova.cli.db import require_current_schema
from nova.engine import process
from nova.extensions import db, settings
from nova.services import reconcile
from nova.worker import loop


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@with_appcontext
def worker_command(burst: bool) -> None:
    """Run an RQ worker that processes submissions and solves."""
    require_current_schema()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    config = settings(app)
    # Inherited by every work horse and engine process; only ever lowers priority.
    process.lower_priority(config.worker_nice)
    counts = reconcile.reconcile(config.max_attempts, config.heartbeat_seconds)
    if any(counts.values()):
        click.echo(f"picked up work left pending: {counts}")
    # Hold no database connection while RQ forks a work horse per job: a horse would inherit
    # this session's connection, share it with its siblings and, once the database has
    # restarted, fail every job on the dead socket (a fresh one passes the pool's pre-ping).
    db.session.remove()
    db.engine.dispose()
    if config.warm_engine:
        from nova.engine import warm_engine

        # Opened here, before RQ forks a work horse per job: every horse shares it.
        engine = warm_engine.preload(config.index_dirs)
        if engine is not None:
            click.echo(f"warm engine: {len(engine.index_files)} index files open")
    loop.run_worker(app, burst=burst)
