"""indexes for result reuse and retention

Result reuse looks up earlier images by file hash; `nova purge` selects submissions by date.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 02:39:50.595187

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_submissions_created_at"), ["created_at"], unique=False)

    with op.batch_alter_table("user_images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_images_file_hash"), ["file_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("user_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_images_file_hash"))

    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_submissions_created_at"))
