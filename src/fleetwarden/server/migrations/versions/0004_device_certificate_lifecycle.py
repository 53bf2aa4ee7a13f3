"""Device certificate lifecycle: pending renewals, CRL reasons, issuing CA per certificate

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("pending_cert_serial", sa.String(length=64), nullable=True))
    with op.batch_alter_table("device_certificates") as batch:
        batch.add_column(sa.Column("revocation_reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("issuer_key_id", sa.String(length=64), nullable=True))
        batch.create_index(
            batch.f("ix_device_certificates_revoked_at"), ["revoked_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("device_certificates") as batch:
        batch.drop_index(batch.f("ix_device_certificates_revoked_at"))
        batch.drop_column("issuer_key_id")
        batch.drop_column("revocation_reason")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("pending_cert_serial")
