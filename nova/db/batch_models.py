"""Database models of time series (nova.services.batches): a batch and its ordered frames.

Kept apart from nova.db.models only for its size; every frame is an ordinary submission.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from nova.db.models import Submission, User, random_id, utcnow
from nova.extensions import db


class Batch(db.Model):
    """Frames uploaded together with ``/api/upload_batch`` (or the upload page's time series)."""

    __tablename__ = "batches"
    __table_args__ = {"sqlite_autoincrement": True}

    # Random like submission ids: a batch's id tells nothing of how many others there are.
    id: Mapped[int] = mapped_column(
        primary_key=True, default=random_id(lambda: Batch.__table__.c.id)
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    publicly_visible: Mapped[str] = mapped_column(String(1), default="y")
    # Solve each frame first with the hints of the frames already solved (the default).
    chain: Mapped[bool] = mapped_column(default=True)

    user: Mapped[User | None] = relationship()
    frames: Mapped[list[BatchFrame]] = relationship(
        back_populates="batch", order_by="BatchFrame.position"
    )


class BatchFrame(db.Model):
    """One frame of a batch: its place in the sequence and the submission that carries it."""

    __tablename__ = "batch_frames"
    __table_args__ = (UniqueConstraint("batch_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    position: Mapped[int]
    # Deleting a submission (its owner, or retention) takes the frame out of the batch.
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), unique=True
    )

    batch: Mapped[Batch] = relationship(back_populates="frames")
    submission: Mapped[Submission] = relationship()
