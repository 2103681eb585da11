"""A batch task's reads and claims on its frames (the worker holds no transaction open:
each read ends with a commit, so the next one sees other tasks' changes)."""

from __future__ import annotations

from sqlalchemy import func, select, update

from nova.db.batch_models import BatchFrame
from nova.db.models import Calibration, Job, JobStatus, Submission, UserImage, utcnow
from nova.extensions import db


def pending_frames(batch_id: int, limit: int) -> list[tuple[int, int, int | None]]:
    """The first frames still to do, in part order: (position, submission, queued job,
    or None when the submission is still to be recognised)."""
    rows = db.session.execute(
        select(BatchFrame.position, Submission.id, Job.id)
        .join(Submission, BatchFrame.submission_id == Submission.id)
        .outerjoin(UserImage, UserImage.submission_id == Submission.id)
        .outerjoin(Job, Job.user_image_id == UserImage.id)
        .where(
            BatchFrame.batch_id == batch_id,
            Submission.processing_started.is_(None) | (Job.status == JobStatus.QUEUED),
        )
        .order_by(BatchFrame.position, Job.id)
        .limit(limit)
    ).all()
    db.session.commit()  # end the read: other tasks' changes must be seen next time
    return [(int(p), int(s), None if j is None else int(j)) for p, s, j in rows]


def claim_submission(submission_id: int) -> bool:
    """Take a frame's recognition; False when another task took it first."""
    result = db.session.execute(
        update(Submission)
        .where(Submission.id == submission_id, Submission.processing_started.is_(None))
        .values(processing_started=utcnow())
    )
    db.session.commit()
    return result.rowcount == 1


def nearest_solved_frame(batch_id: int, position: int) -> tuple[int, Calibration] | None:
    """The batch's solved frame nearest to ``position`` (position, its calibration)."""
    row = db.session.execute(
        select(BatchFrame.position, Calibration)
        .join(UserImage, UserImage.submission_id == BatchFrame.submission_id)
        .join(Job, Job.user_image_id == UserImage.id)
        .join(Calibration, Calibration.job_id == Job.id)
        .where(BatchFrame.batch_id == batch_id)
        .order_by(func.abs(BatchFrame.position - position), BatchFrame.position)
        .limit(1)
    ).first()
    db.session.commit()
    return None if row is None else (int(row[0]), row[1])
