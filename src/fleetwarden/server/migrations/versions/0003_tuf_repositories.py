"""TUF repositories: signed metadata and artifact release counters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 00:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tuf_metadata",
        sa.Column("repo", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repo", "role", "version", name=op.f("pk_tuf_metadata")),
    )
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(
            sa.Column("release_counter", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("withdrawn", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("withdrawn")
        batch.drop_column("release_counter")
    op.drop_table("tuf_metadata")
