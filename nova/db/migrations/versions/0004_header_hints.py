"""header hints: the upload option and each job's record of its hints

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:20:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("use_header_hints", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hints", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("hints")
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_column("use_header_hints")
