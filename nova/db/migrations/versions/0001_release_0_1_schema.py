"""release 0.1 schema

The tables as release 0.1.0 created them (with create_all(), before migrations); `nova
init-db` stamps such a database with this revision instead of running it.

Revision ID: 0001
Revises:
Create Date: 2026-11-30 02:38:40.821226

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("display_name", sa.String(length=256), nullable=False),
        sa.Column("api_key_hash", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_login", sa.DateTime(), nullable=True),
        sa.Column("default_visibility", sa.String(length=1), nullable=False),
        sa.Column("default_commercial_use", sa.String(length=1), nullable=False),
        sa.Column("default_modifications", sa.String(length=2), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_api_key_hash"), ["api_key_hash"], unique=True)

    op.create_table(
        "albums",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("publicly_visible", sa.String(length=1), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("albums", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_albums_user_id"), ["user_id"], unique=False)

    op.create_table(
        "api_sessions",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("api_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("via_api", sa.Boolean(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("upload_hash", sa.String(length=40), nullable=True),
        sa.Column("original_filename", sa.String(length=256), nullable=False),
        sa.Column("processing_started", sa.DateTime(), nullable=True),
        sa.Column("processing_finished", sa.DateTime(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("publicly_visible", sa.String(length=1), nullable=False),
        sa.Column("allow_commercial_use", sa.String(length=1), nullable=False),
        sa.Column("allow_modifications", sa.String(length=2), nullable=False),
        sa.Column("scale_units", sa.String(length=16), nullable=False),
        sa.Column("scale_type", sa.String(length=2), nullable=False),
        sa.Column("scale_lower", sa.Double(), nullable=True),
        sa.Column("scale_upper", sa.Double(), nullable=True),
        sa.Column("scale_est", sa.Double(), nullable=True),
        sa.Column("scale_err", sa.Double(), nullable=True),
        sa.Column("center_ra", sa.Double(), nullable=True),
        sa.Column("center_dec", sa.Double(), nullable=True),
        sa.Column("radius", sa.Double(), nullable=True),
        sa.Column("parity", sa.Integer(), nullable=False),
        sa.Column("tweak_order", sa.Integer(), nullable=False),
        sa.Column("downsample_factor", sa.Integer(), nullable=False),
        sa.Column("crpix_center", sa.Boolean(), nullable=False),
        sa.Column("invert", sa.Boolean(), nullable=False),
        sa.Column("positional_error", sa.Double(), nullable=True),
        sa.Column("use_sextractor", sa.Boolean(), nullable=False),
        sa.Column("image_width", sa.Integer(), nullable=False),
        sa.Column("image_height", sa.Integer(), nullable=False),
        sa.Column("album_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["album_id"],
            ["albums.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_submissions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "user_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("file_hash", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("fits_extension", sa.Integer(), nullable=False),
        sa.Column("original_filename", sa.String(length=256), nullable=False),
        sa.Column("publicly_visible", sa.String(length=1), nullable=False),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("user_images", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_user_images_submission_id"), ["submission_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_user_images_user_id"), ["user_id"], unique=False)

    op.create_table(
        "album_images",
        sa.Column("album_id", sa.Integer(), nullable=False),
        sa.Column("user_image_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["album_id"],
            ["albums.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_image_id"],
            ["user_images.id"],
        ),
        sa.PrimaryKeyConstraint("album_id", "user_image_id"),
    )
    op.create_table(
        "comments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_image_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_image_id"],
            ["user_images.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_comments_user_image_id"), ["user_image_id"], unique=False
        )

    op.create_table(
        "image_tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_image_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.String(length=256), nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("tagger_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tagger_id"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["user_image_id"],
            ["user_images.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("image_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_tags_text"), ["text"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_image_tags_user_image_id"), ["user_image_id"], unique=False
        )

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_image_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("sources_detected", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_image_id"],
            ["user_images.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_user_image_id"), ["user_image_id"], unique=False)

    op.create_table(
        "sky_objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_image_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_image_id"],
            ["user_images.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sky_objects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sky_objects_name"), ["name"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_sky_objects_user_image_id"), ["user_image_id"], unique=False
        )

    op.create_table(
        "calibrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("ra", sa.Double(), nullable=False),
        sa.Column("dec", sa.Double(), nullable=False),
        sa.Column("radius", sa.Double(), nullable=False),
        sa.Column("pixscale", sa.Double(), nullable=False),
        sa.Column("orientation", sa.Double(), nullable=False),
        sa.Column("parity", sa.Double(), nullable=False),
        sa.Column("width_arcsec", sa.Double(), nullable=False),
        sa.Column("height_arcsec", sa.Double(), nullable=False),
        sa.Column("x", sa.Double(), nullable=False),
        sa.Column("y", sa.Double(), nullable=False),
        sa.Column("z", sa.Double(), nullable=False),
        sa.Column("dec_min", sa.Double(), nullable=False),
        sa.Column("dec_max", sa.Double(), nullable=False),
        sa.Column("wcs_header", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("calibrations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_calibrations_dec_max"), ["dec_max"], unique=False)
        batch_op.create_index(batch_op.f("ix_calibrations_dec_min"), ["dec_min"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("calibrations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calibrations_dec_min"))
        batch_op.drop_index(batch_op.f("ix_calibrations_dec_max"))

    op.drop_table("calibrations")
    with op.batch_alter_table("sky_objects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sky_objects_user_image_id"))
        batch_op.drop_index(batch_op.f("ix_sky_objects_name"))

    op.drop_table("sky_objects")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_user_image_id"))
        batch_op.drop_index(batch_op.f("ix_jobs_status"))

    op.drop_table("jobs")
    with op.batch_alter_table("image_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_tags_user_image_id"))
        batch_op.drop_index(batch_op.f("ix_image_tags_text"))

    op.drop_table("image_tags")
    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_comments_user_image_id"))

    op.drop_table("comments")
    op.drop_table("album_images")
    with op.batch_alter_table("user_images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_images_user_id"))
        batch_op.drop_index(batch_op.f("ix_user_images_submission_id"))

    op.drop_table("user_images")
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_submissions_user_id"))

    op.drop_table("submissions")
    with op.batch_alter_table("api_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_sessions_user_id"))

    op.drop_table("api_sessions")
    with op.batch_alter_table("albums", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_albums_user_id"))

    op.drop_table("albums")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_api_key_hash"))

    op.drop_table("users")
