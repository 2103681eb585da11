"""The database: SQLite tuning, migrations and the check that the schema is current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import stamp, upgrade
from sqlalchemy import Engine, event, inspect

from nova.extensions import db

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Release 0.1.0 created its tables with create_all() and had no alembic_version table; its
# schema is exactly this first revision, so such a database is stamped with it, then upgraded.
RELEASE_0_1_REVISION = "0001"
RELEASE_0_1_TABLES = {"users", "submissions", "user_images", "jobs", "calibrations"}


# How long an SQLite writer waits for another's lock before "database is locked" (ms).
SQLITE_BUSY_TIMEOUT_MS = 30_000


def tune_sqlite(engine: Engine) -> None:
    """Let many web threads and workers share one SQLite file without "database is locked".

    WAL: readers (status polls above all) never block the writer's commit, nor it them.
    pysqlite opens a transaction only at a statement that writes, so reads see the newest
    data as they always have; that transaction now begins IMMEDIATE, taking the write lock at
    once and waiting (busy timeout) for another writer to finish. DEFERRED, as before, took
    it only at the write, and SQLite refuses at once a transaction that must upgrade its
    lock while another writer holds it (waiting could deadlock): concurrent uploads failed.
    """
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = "IMMEDIATE"
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()


class SchemaNotCurrent(RuntimeError):
    """The database is older (or newer) than this release's schema: run `nova init-db`."""


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return head


def current_revision() -> str | None:
    """The revision the database is at; None when it was never migrated."""
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_schema() -> None:
    """Raise SchemaNotCurrent with what to do, unless the database is at this release's head.

    The web server and workers call this before serving: running on an old schema would fail
    later, on some request, with a confusing SQL error instead.
    """
    current, head = current_revision(), head_revision()
    if current == head:
        return
    where = db.engine.url.render_as_string(hide_password=True)
    if current is None:
        state = "has no Nova schema (or one from before migrations)"
    else:
        state = f"is at schema revision {current}"
    raise SchemaNotCurrent(
        f"The database {where} {state}; this release of Nova needs revision {head}. "
        "Run `nova init-db` (with docker compose: `docker compose run --rm init`) to migrate "
        "it, then start Nova again."
    )


def init_database() -> str:
    """Bring the database to this release's schema; return what was done, for the operator.

    An empty database is built by the migrations; a database from release 0.1.0 (tables, no
    revision) is recognised, stamped as revision 0001 and upgraded from there. Safe to run
    again: an up-to-date database is left alone.
    """
    directory = str(MIGRATIONS_DIR)
    before = current_revision()
    tables = set(inspect(db.engine).get_table_names())
    if before is None and RELEASE_0_1_TABLES <= tables:
        stamp(directory=directory, revision=RELEASE_0_1_REVISION)
        before = RELEASE_0_1_REVISION
    upgrade(directory=directory)
    db.session.remove()  # DDL ran on other connections: start from fresh ones
    after = current_revision()
    if before == after:
        return f"schema already at revision {after}"
    return f"schema migrated from revision {before or 'none (empty database)'} to {after}"
