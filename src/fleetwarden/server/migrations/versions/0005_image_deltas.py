"""Image deltas: the delta artifact an assignment ships instead of the full image

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("delta_artifact_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_assignments_delta_artifact_id_artifacts"),
            "artifacts",
            ["delta_artifact_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.drop_constraint(
            batch.f("fk_assignments_delta_artifact_id_artifacts"), type_="foreignkey"
        )
        batch.drop_column("delta_artifact_id")
