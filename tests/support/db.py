"""Emptying the test database between tests."""

from __future__ import annotations

import time

from sqlalchemy import text

from nova.extensions import db

# Locks held by sessions of other processes on this database (a worker's, a web server's).
_OTHER_SESSIONS_LOCKS = text(
    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
    " WHERE d.datname = current_database() AND l.pid <> pg_backend_pid()"
    " AND l.locktype = 'relation'"
)


def wait_for_other_sessions_locks(timeout: float = 60) -> None:
    """On PostgreSQL, wait until no other session holds a lock on a table of this database.

    A worker killed at teardown leaves its server process to notice the closed connection and
    roll back; dropping the tables before that deadlocks with it."""
    if db.engine.dialect.name != "postgresql":
        return
    deadline = time.monotonic() + timeout
    with db.engine.connect() as connection:
        while connection.execute(_OTHER_SESSIONS_LOCKS).scalar_one():
            connection.rollback()
            assert time.monotonic() < deadline, "other sessions still hold locks on the tables"
            time.sleep(0.1)


def drop_everything() -> None:
    """Drop every table, the migration record included (tests start each from empty)."""
    wait_for_other_sessions_locks()
    db.drop_all()
    with db.engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
