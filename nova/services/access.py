"""Who may see what: the one home of Nova's privacy rule.

- A public image (``publicly_visible == "y"``) and everything derived from it is visible to
  everyone; a private one to its owner only, in every page, picture, file, listing, search,
  tag and API answer (``can_view`` for one row, ``visible_clause`` for queries).
- Changing or deleting a row, and the caller's own lists, are for its owner only (``owns``,
  ``owned_clause``), whether the row is public or not.
- One exception, for clients that poll without a session or cookie (N.I.N.A., AstroImageJ,
  astrometry-net-client, client.py before its cookie jar): whoever holds the id of a
  private submission or job may read its *solve result* -- the submission and job status,
  the calibration, the info (objects in the field and machine tags, no user tags), the
  annotations and the WCS file -- while the job runs and for ``NOVA_ID_ACCESS_HOURS`` after
  it ends. Those are the numbers a client asked the solver for; none of them holds a pixel
  of the image or anything its owner wrote. Submission and job ids are random
  (``models.random_id``), so holding one means having been told it by the upload's answer.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import ColumnElement

from nova.db.models import Job, Submission, User, utcnow
from nova.extensions import settings


class Owned(Protocol):
    publicly_visible: str
    user_id: int | None


class OwnedColumns(Protocol):
    publicly_visible: ColumnElement[str]
    user_id: ColumnElement[int | None]


def can_view(item: Owned, user: User | None) -> bool:
    """Public rows are visible to all; private ones only to their owner."""
    return owner_or_public(item.publicly_visible, item.user_id, lambda: user.id if user else None)


def owner_or_public(
    publicly_visible: str, owner_id: int | None, caller_id: Callable[[], int | None]
) -> bool:
    """``can_view`` on a row's two facts; ``caller_id`` is asked only for a private row
    (the status answers, nova.services.status, look the caller up only when it matters)."""
    if publicly_visible == "y":
        return True
    return owner_id is not None and caller_id() == owner_id


def visible_clause(model: type[OwnedColumns], user: User | None) -> ColumnElement[bool]:
    """``can_view`` as a WHERE clause on ``model``'s rows."""
    public = model.publicly_visible == "y"
    if user is None:
        return public
    return public | (model.user_id == user.id)


def owns(item: Owned, user: User | None) -> bool:
    """Whether ``user`` owns the row: the one who may change or delete it, and whose own
    lists ("my jobs", the dashboard) hold it, public or not."""
    return user is not None and item.user_id is not None and item.user_id == user.id


def owned_clause(model: type[OwnedColumns], user: User) -> ColumnElement[bool]:
    """``owns`` as a WHERE clause on ``model``'s rows."""
    return model.user_id == user.id


def _id_access_window() -> timedelta | None:
    hours = settings().id_access_hours
    return timedelta(hours=hours) if hours > 0 else None


def id_opens_job(job: Job) -> bool:
    """Whether the job's id alone opens its solve result: running, or ended recently."""
    return id_opens_job_ended(job.finished_at)


def id_opens_job_ended(finished_at: datetime | None) -> bool:
    """``id_opens_job`` on the job's end time (None: not ended)."""
    window = _id_access_window()
    if window is None:
        return False
    return finished_at is None or finished_at >= utcnow() - window


def id_opens_submission(submission: Submission) -> bool:
    """Whether the submission's id alone opens its status: being processed, a job of it
    opened by its id, or (no job yet) processed recently."""
    jobs = [job for image in submission.user_images for job in image.jobs]
    return id_opens_submission_ended(submission.processing_finished, [j.finished_at for j in jobs])


def id_opens_submission_ended(
    processing_finished: datetime | None, jobs_finished_at: list[datetime | None]
) -> bool:
    """``id_opens_submission`` on the submission's and its jobs' end times."""
    window = _id_access_window()
    if window is None:
        return False
    if processing_finished is None:
        return True
    if jobs_finished_at:
        return any(id_opens_job_ended(ended) for ended in jobs_finished_at)
    return processing_finished >= utcnow() - window


def can_read_result(job: Job, user: User | None) -> bool:
    """The solve result of a job: for whoever may see its image, or holds its id."""
    return can_view(job.user_image, user) or id_opens_job(job)


def can_read_status(submission: Submission, user: User | None) -> bool:
    return can_view(submission, user) or id_opens_submission(submission)
