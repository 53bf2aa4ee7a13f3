"""Tables. Schema changes go through Alembic (``migrations/``); ``alembic check`` in the test
suite fails when this file and the migrations disagree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ApiToken",
    "Artifact",
    "Assignment",
    "AssignmentEvent",
    "AuditRecord",
    "Base",
    "Deployment",
    "Device",
    "DeviceCertificate",
    "EnrollmentToken",
    "InventorySnapshot",
    "MaintenanceWindow",
    "Release",
    "ReleaseArtifact",
    "Rollout",
    "RolloutEvent",
    "RolloutMember",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite hands back naive ones otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: Json,
        list[Any]: Json,
    }


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]
    uses_allowed: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    labels: Mapped[dict[str, Any]]
    note: Mapped[str] = mapped_column(String(256), default="")
    revoked_at: Mapped[datetime | None]


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(253), index=True)
    #: "active" or "revoked"; a revoked device is refused on its next request.
    status: Mapped[str] = mapped_column(String(16), default="active")
    #: Operator-set labels (from the enrollment token, then `device label`).
    labels: Mapped[dict[str, Any]]
    #: Labels the agent reports from its own configuration; operator labels win on clashes.
    reported_labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    site: Mapped[str] = mapped_column(String(256), default="")
    zone: Mapped[str] = mapped_column(String(256), default="")
    hardware_model: Mapped[str] = mapped_column(String(256), default="")
    os_name: Mapped[str] = mapped_column(String(256), default="")
    os_version: Mapped[str] = mapped_column(String(256), default="")
    kernel: Mapped[str] = mapped_column(String(256), default="")
    arch: Mapped[str] = mapped_column(String(256), default="")
    agent_version: Mapped[str] = mapped_column(String(256), default="")
    installed_release: Mapped[str] = mapped_column(String(256), default="")
    enrolled_at: Mapped[datetime]
    enrollment_token_id: Mapped[int | None] = mapped_column(ForeignKey("enrollment_tokens.id"))
    last_seen_at: Mapped[datetime | None]
    #: Serial (hex) of the one certificate that may open sessions for this device.
    cert_serial: Mapped[str | None] = mapped_column(String(64))
    cert_not_after: Mapped[datetime | None]
    #: A renewed certificate not used yet: it becomes ``cert_serial`` when the device first
    #: opens a session with it, so a renewal answer lost on the way never locks a device out.
    pending_cert_serial: Mapped[str | None] = mapped_column(String(64))
    #: Bumped whenever the answer to this device's poll changes; it is the poll's ETag.
    rev: Mapped[int] = mapped_column(BigInteger, default=1)
    inventory_fingerprint: Mapped[str | None] = mapped_column(String(64))
    #: Denormalised from the newest assignment, so listings need no join.
    latest_assignment_id: Mapped[int | None] = mapped_column(Integer)
    latest_assignment_state: Mapped[str | None] = mapped_column(String(16))


class DeviceCertificate(Base):
    __tablename__ = "device_certificates"
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    issued_at: Mapped[datetime]
    not_after: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(index=True)
    pem: Mapped[str] = mapped_column(Text)
    #: CRL reason: "superseded" (replaced by a renewal) or None (revoked with the device).
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    #: Subject key identifier (hex) of the CA that issued it; None for rows from before 0004,
    #: which the first CA issued.
    issuer_key_id: Mapped[str | None] = mapped_column(String(64))


class InventorySnapshot(Base):
    __tablename__ = "inventory_snapshots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    collected_at: Mapped[datetime]
    fingerprint: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, Any]]
    __table_args__ = (Index("ix_inventory_snapshots_device_at", "device_id", "collected_at"),)


class Artifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    compatible_models: Mapped[list[Any]]
    meta: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    # TUF: the counter of this artifact within its name (1, 2, ...), signed into the image
    # repository; agents refuse a lower counter than the one installed unless the installed
    # artifact was withdrawn (a downgrade needs the image repository's consent, not only the
    # director's).
    release_counter: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    __table_args__ = (UniqueConstraint("name", "version", name="uq_artifacts_name_version"),)


class Release(Base):
    __tablename__ = "releases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    health_checks: Mapped[list[Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    __table_args__ = (UniqueConstraint("name", "version", name="uq_releases_name_version"),)


class ReleaseArtifact(Base):
    __tablename__ = "release_artifacts"
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"), primary_key=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


class Deployment(Base):
    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    selector: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))


_ACTIVE_SQL = "state IN ('pending', 'downloading', 'installing', 'rebooting', 'verifying')"


class Assignment(Base):
    """One release on one device. At most one unfinished assignment per device: enforced by
    a partial unique index, so no race between replicas or rollouts can ever break it."""

    __tablename__ = "assignments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id"), index=True)
    rollout_id: Mapped[int | None] = mapped_column(ForeignKey("rollouts.id"), index=True)
    #: What the device ran and what it is, when assigned: the risk model learns from these.
    from_release: Mapped[str] = mapped_column(String(256), default="", server_default="")
    hardware_model: Mapped[str] = mapped_column(String(256), default="", server_default="")
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    #: A delta from the device's image to the release's, shipped instead of the full image
    #: (services.deltas); None: the release's artifacts as they are.
    delta_artifact_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id"))
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    progress: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    __table_args__ = (
        Index("ix_assignments_device_state", "device_id", "state"),
        Index(
            "uq_assignments_one_active_per_device",
            "device_id",
            unique=True,
            sqlite_where=text(_ACTIVE_SQL),
            postgresql_where=text(_ACTIVE_SQL),
        ),
    )


class AssignmentEvent(Base):
    __tablename__ = "assignment_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), index=True)
    at: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")


class AuditRecord(Base):
    """Append-only: a database trigger (see the initial migration) refuses UPDATE and DELETE."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(160))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id"),)


class MaintenanceWindow(Base):
    """A recurring window (cron + duration + zone) for the devices its selector matches."""

    __tablename__ = "maintenance_windows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    cron: Mapped[str] = mapped_column(String(128))
    duration_seconds: Mapped[int] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64))
    selector: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))


class Rollout(Base):
    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    selector: Mapped[str] = mapped_column(Text)
    #: The strategy as given (StrategySpec JSON), so the page shows what was approved.
    strategy: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(32), index=True)
    emergency: Mapped[bool] = mapped_column(Boolean, default=False)
    current_wave: Mapped[int] = mapped_column(Integer, default=0)
    wave_count: Mapped[int] = mapped_column(Integer, default=0)
    wave_completed_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    approved_by: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class RolloutMember(Base):
    """A device in a rollout: its wave, its place in line, and where it stands."""

    __tablename__ = "rollout_members"
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    group_key: Mapped[str] = mapped_column(String(256), default="")
    model: Mapped[str] = mapped_column(String(256), default="")
    #: What the device ran when it joined, so abort-and-rollback can send it back.
    from_release: Mapped[str] = mapped_column(String(256), default="")
    from_release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    assignment_id: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    since: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    rolled_back: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (Index("ix_rollout_members_order", "rollout_id", "wave", "position"),)


class RolloutEvent(Base):
    """What happened to a rollout: verbs, gate decisions, waves, and progress snapshots."""

    __tablename__ = "rollout_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(160))
    message: Mapped[str] = mapped_column(Text, default="")
    counts: Mapped[dict[str, Any] | None]


class TufMetadata(Base):
    """Every signed version of every TUF role of both repositories (``image``, ``director``).

    Stored in the database so that every replica serves the same bytes; the keys are not here,
    so the database alone cannot produce metadata that devices accept. ``digest`` identifies
    the signed content (for delegated bins: their target set) so that unchanged bins are not
    re-signed."""

    __tablename__ = "tuf_metadata"
    repo: Mapped[str] = mapped_column(String(16), primary_key=True)
    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    expires: Mapped[datetime]
    digest: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
