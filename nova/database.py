"""Database set-up: tables, and job ids that never repeat across database re-creations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, text

from .extensions import db
from .models import Job, utcnow

# Job ids of a new database start at the number of seconds since this date, so a database
# that is recreated later continues above the ids an earlier one handed out (unless that one
# averaged more than a job per second). Clients such as astroquery cache files by job id.
JOB_ID_EPOCH = datetime(2020, 1, 1)


def job_id_floor() -> int:
    return int((utcnow() - JOB_ID_EPOCH).total_seconds())


def init_database() -> None:
    """Create missing tables; give an empty jobs table its time-based first id."""
    db.create_all()
    if db.session.scalar(select(func.count()).select_from(Job)):
        return
    floor = job_id_floor()
    dialect = db.engine.dialect.name
    if dialect == "sqlite":
        current = db.session.scalar(text("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'"))
        if current is None:
            db.session.execute(
                text("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', :seq)"),
                {"seq": floor},
            )
        elif current < floor:
            db.session.execute(
                text("UPDATE sqlite_sequence SET seq = :seq WHERE name = 'jobs'"), {"seq": floor}
            )
    elif dialect == "postgresql":
        db.session.execute(
            text(
                "SELECT setval('jobs_id_seq', GREATEST(:seq, (SELECT last_value FROM jobs_id_seq)))"
            ),
            {"seq": floor},
        )
    db.session.commit()
