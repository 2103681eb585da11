"""sessions that end, submission attempts, the uploader's address

- users.session_token: named by every web session and remember cookie; replaced on sign-out,
  password change and API key reset, which ends all of them at once;
- submissions.attempts: how often a worker took the submission (the reconciler gives up
  after NOVA_MAX_ATTEMPTS, as for jobs);
- submissions.client_address: where an anonymous upload came from (its queue cap).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 09:00:00

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_token", sa.String(length=64), nullable=True))

    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("client_address", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_submissions_client_address"), ["client_address"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_submissions_client_address"))
        batch_op.drop_column("client_address")
        batch_op.drop_column("attempts")

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("session_token")
