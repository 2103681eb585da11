"""The status answers' cache in redis, and its invalidation (the one place every state
change passes).

An entry holds a row's facts with the versions it was built under; every commit that changed
a job, submission, image, calibration, tag or object in the field bumps the version of the
rows it touched (``_collect_changes`` / ``_bump_after_commit``, SQLAlchemy session events), so
no code path that changes state can forget it. A bulk statement whose rows cannot be named
from its WHERE clause bumps the global generation instead, which invalidates every entry.
Versions are read *before* the database: a commit that lands meanwhile makes an entry stale
at once, never right. Entries also expire (``ENTRY_SECONDS``), which bounds staleness if
redis was unreachable when a commit tried to bump a version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import current_app, has_app_context
from redis.client import Pipeline
from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList

from nova.db.models import (
    Calibration,
    ImageTag,
    Job,
    SkyObject,
    Submission,
    UserImage,
    WebhookDelivery,
)
from nova.infra import jobqueue

log = logging.getLogger(__name__)

PREFIX = "nova:status:"
GENERATION_KEY = PREFIX + "generation"
# An entry lives this long; a version key much longer (an expired version reads as 0, and an
# entry stored under 0 must have expired before that can happen again).
ENTRY_SECONDS = 120
VERSION_SECONDS = 2 * 24 * 3600


def redis_connection() -> redis.Redis:
    return jobqueue.redis_connection()


def _version_key(kind: str, row_id: int) -> str:
    return f"{PREFIX}v:{kind}:{row_id}"


def _entry_key(kind: str, row_id: int) -> str:
    return f"{PREFIX}e:{kind}:{row_id}"


def _as_int(raw: bytes | None) -> int:
    return int(raw) if raw is not None else 0


# -- the cache -------------------------------------------------------------------------------

Key = tuple[str, int]  # (kind, row id)
Commands = Callable[[Pipeline], None]


@dataclass
class Reading:
    """What one round trip to redis read: the facts of the entries still valid, the version
    each other key was read under (to store it with once built), and the replies of the
    caller's own commands sent along (``extra``)."""

    connection: redis.Redis
    generation: int
    found: dict[Key, Any] = field(default_factory=dict)
    stale: dict[Key, int] = field(default_factory=dict)
    extra: list[Any] = field(default_factory=list)


def read(keys: list[Key], extra: Commands | None = None) -> Reading | None:
    """Read the entries of ``keys`` and run ``extra``'s commands in the same round trip;
    None when redis cannot be reached (the caller answers from the database)."""
    try:
        connection = redis_connection()
        pipe = connection.pipeline(transaction=False)
        pipe.get(GENERATION_KEY)
        for kind, row_id in keys:
            pipe.get(_entry_key(kind, row_id))
            pipe.get(_version_key(kind, row_id))
        if extra is not None:
            extra(pipe)
        replies = pipe.execute()
    except redis.exceptions.RedisError as exc:
        log.warning("status cache unavailable (%s): answering from the database", exc)
        return None
    reading = Reading(connection, _as_int(replies[0]), extra=replies[1 + 2 * len(keys) :])
    for index, key in enumerate(keys):
        raw, version = replies[1 + 2 * index], _as_int(replies[2 + 2 * index])
        if raw is not None:
            entry = json.loads(raw)
            if entry["v"] == version and entry["g"] == reading.generation:
                reading.found[key] = entry["d"]
                continue
        reading.stale[key] = version
    return reading


def facts(
    reading: Reading | None, kind: str, ids: list[int], build: Callable[[int], Any]
) -> dict[int, Any]:
    """The facts of each id from ``reading`` (ids it did not ask for are read now; ``build(id)``
    from the database when an entry was missing or stale, then stored); a row that does not
    exist is None (cached too)."""
    if reading is None:
        return {row_id: build(row_id) for row_id in ids}
    unread = [
        (kind, i) for i in ids if (kind, i) not in reading.found and (kind, i) not in reading.stale
    ]
    more = read(unread) if unread else reading
    if more is None:
        return {row_id: build(row_id) for row_id in ids}
    if more is not reading:
        # Stored under the older generation of the two: a change between them makes those
        # entries stale at once, never wrong.
        reading.found.update(more.found)
        reading.stale.update(more.stale)
    found: dict[int, Any] = {}
    missing: list[tuple[int, int]] = []
    for row_id in ids:
        if (kind, row_id) in reading.found:
            found[row_id] = reading.found[kind, row_id]
        else:
            missing.append((row_id, reading.stale[kind, row_id]))
    if missing:
        pipe = reading.connection.pipeline(transaction=False)
        for row_id, version in missing:
            # Built after the versions were read: a commit meanwhile makes this stale.
            built = found[row_id] = build(row_id)
            entry = json.dumps({"v": version, "g": reading.generation, "d": built})
            pipe.set(_entry_key(kind, row_id), entry, ex=ENTRY_SECONDS)
        try:
            pipe.execute()
        except redis.exceptions.RedisError as exc:
            log.warning("could not store status entries: %s", exc)
    return found


def cached(kind: str, ids: list[int], build: Callable[[int], Any]) -> dict[int, Any]:
    """The facts of each id, read in one round trip (see ``facts``)."""
    if not ids:
        return {}
    return facts(read([(kind, row_id) for row_id in ids]), kind, ids, build)


# -- invalidation: the one place every state change passes ----------------------------------

_PENDING = "nova.services.status.changed"
# Tables the answers are built from, and the entries a change of one of their rows touches.
_WATCHED = frozenset(
    {
        "jobs",
        "submissions",
        "user_images",
        "calibrations",
        "image_tags",
        "sky_objects",
        "webhook_deliveries",
    }
)


class _Changes:
    def __init__(self) -> None:
        self.jobs: set[int] = set()
        self.submissions: set[int] = set()
        self.everything = False


def _changes(session: Session) -> _Changes:
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = _Changes()
    return pending


def _jobs_of_images(session: Session, image_ids: Iterable[int]) -> list[int]:
    ids = [i for i in image_ids if i is not None]
    if not ids:
        return []
    return list(session.connection().scalars(select(Job.id).where(Job.user_image_id.in_(ids))))


def _submissions_of_images(session: Session, image_ids: Iterable[int]) -> list[int]:
    ids = [i for i in image_ids if i is not None]
    if not ids:
        return []
    return list(
        session.connection().scalars(select(UserImage.submission_id).where(UserImage.id.in_(ids)))
    )


@event.listens_for(Session, "after_flush")
def _collect_changes(session: Session, flush_context: object) -> None:
    """Note the rows this flush changed (the lists still hold the flushed objects)."""
    changes = _changes(session)
    deleted_images = {
        obj.id: obj.submission_id for obj in session.deleted if isinstance(obj, UserImage)
    }
    images_of_new_jobs: set[int] = set()
    images_changed: set[int] = set()
    for obj in [*session.new, *session.dirty, *session.deleted]:
        if isinstance(obj, Job):
            changes.jobs.add(obj.id)
            if obj in session.new or obj in session.deleted:  # the submission's job list
                if obj.user_image_id in deleted_images:
                    changes.submissions.add(deleted_images[obj.user_image_id])
                else:
                    images_of_new_jobs.add(obj.user_image_id)
        elif isinstance(obj, Submission):
            changes.submissions.add(obj.id)
        elif isinstance(obj, UserImage):
            changes.submissions.add(obj.submission_id)
            images_changed.add(obj.id)  # visibility or owner of its jobs' answers
        elif isinstance(obj, Calibration | WebhookDelivery):
            changes.jobs.add(obj.job_id)
        elif isinstance(obj, ImageTag | SkyObject):
            images_changed.add(obj.user_image_id)
    changes.submissions.update(_submissions_of_images(session, images_of_new_jobs))
    changes.jobs.update(_jobs_of_images(session, images_changed - deleted_images.keys()))


def _ids_in_where(whereclause: object, table_name: str) -> set[int] | None:
    """The ids a WHERE clause restricts ``table_name``'s rows to (``id = x`` or ``id IN
    (...)``, alone or in an AND); None when it names none."""
    terms = (
        list(whereclause.clauses)
        if isinstance(whereclause, BooleanClauseList) and whereclause.operator is operators.and_
        else [whereclause]
    )
    for term in terms:
        if not isinstance(term, BinaryExpression):
            continue
        column, value = term.left, term.right
        if (
            getattr(column, "name", None) != "id"
            or getattr(getattr(column, "table", None), "name", None) != table_name
        ):
            continue
        if not isinstance(value, BindParameter):
            continue
        if term.operator is operators.eq and isinstance(value.value, int):
            return {value.value}
        if term.operator is operators.in_op and isinstance(value.value, list | tuple):
            if all(isinstance(item, int) for item in value.value):
                return set(value.value)
    return None


@event.listens_for(Session, "do_orm_execute")
def _collect_bulk_changes(state: ORMExecuteState) -> Any:
    """Bulk UPDATE and DELETE statements (claim_job, stages, the reconciler, retention)."""
    if not (state.is_update or state.is_delete):
        return None
    table_name = getattr(state.statement.table, "name", None)  # type: ignore[attr-defined]
    if table_name not in _WATCHED:
        return None
    result = state.invoke_statement()
    if getattr(result, "rowcount", 1) == 0:
        return result  # changed nothing
    changes = _changes(state.session)
    ids = _ids_in_where(state.statement.whereclause, table_name)  # type: ignore[attr-defined]
    if ids is not None and state.is_update and table_name == "jobs":
        changes.jobs.update(ids)
    elif ids is not None and state.is_update and table_name == "submissions":
        changes.submissions.update(ids)
    else:
        changes.everything = True
    return result


@event.listens_for(Session, "after_commit")
def _bump_after_commit(session: Session) -> None:
    changes = session.info.pop(_PENDING, None)
    if (
        changes is None
        or not has_app_context()
        or "nova.infra.storage" not in current_app.extensions
    ):
        return
    if not (changes.jobs or changes.submissions or changes.everything):
        return
    try:
        pipe = redis_connection().pipeline(transaction=False)
        for kind, ids in (("job", changes.jobs), ("info", changes.jobs)):
            for row_id in ids:
                pipe.incr(_version_key(kind, row_id))
                pipe.expire(_version_key(kind, row_id), VERSION_SECONDS)
        for row_id in changes.submissions:
            pipe.incr(_version_key("submission", row_id))
            pipe.expire(_version_key("submission", row_id), VERSION_SECONDS)
        if changes.everything:
            pipe.incr(GENERATION_KEY)
        pipe.execute()
    except redis.exceptions.RedisError as exc:
        # The entries expire within ENTRY_SECONDS; until then polls may answer the old state.
        log.warning("could not invalidate status answers: %s", exc)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, previous_transaction: object) -> None:
    if not session.in_transaction():
        session.info.pop(_PENDING, None)
