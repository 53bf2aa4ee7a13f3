"""Audit records, written in the same transaction as the change they describe."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetwarden.protocol.api import AuditOut
from fleetwarden.server.models import AuditRecord

__all__ = ["SYSTEM", "list_records", "record"]

#: Actors are strings: ``token:<name>``, ``device:<id>`` or ``system`` (background jobs).
SYSTEM = "system"


def record(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | int,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditRecord(
            at=at,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            before=before,
            after=after,
        )
    )


def list_records(
    session: Session,
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    action: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditOut]:
    query = select(AuditRecord).order_by(AuditRecord.id.desc())
    if target_type:
        query = query.where(AuditRecord.target_type == target_type)
    if target_id:
        query = query.where(AuditRecord.target_id == target_id)
    if action:
        query = query.where(AuditRecord.action == action)
    rows = session.scalars(query.limit(limit).offset(offset))
    return [AuditOut.model_validate(r) for r in rows]
