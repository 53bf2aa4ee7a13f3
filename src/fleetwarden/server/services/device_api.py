"""What devices do after enrollment: poll, report status, report inventory, fetch artifacts.

The poll is the hot path (DESIGN §4): one indexed read of the device row authenticates the
session *and* yields the ETag; an unchanged poll ends there with 304 and writes nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, exists, or_, select
from sqlalchemy.orm import Session

from fleetwarden.core import assignments as lifecycle
from fleetwarden.core.device_session import verify_token
from fleetwarden.core.inventory import fingerprint
from fleetwarden.errors import AuthenticationError, Deferred, IllegalTransition, NotFoundError
from fleetwarden.protocol.device import (
    Action,
    ArtifactRef,
    HealthCheck,
    Inventory,
    InventoryAck,
    PollResponse,
    StatusAck,
    StatusReport,
)
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import (
    Artifact,
    Assignment,
    AssignmentEvent,
    Device,
    InventorySnapshot,
    Release,
    ReleaseArtifact,
    Rollout,
)
from fleetwarden.server.services import audit, deltas
from fleetwarden.server.services.members import on_assignment_change
from fleetwarden.server.services.rollouts import install_deferral

__all__ = [
    "DeviceSession",
    "authenticate",
    "authorize_artifact",
    "poll",
    "report_status",
    "store_inventory",
]

_ACTIVE = [s.value for s in lifecycle.ACTIVE_STATES]

#: The row every device request reads (authenticate). Built once: building a statement costs
#: more than running it.
_AUTH_ROW = select(
    Device.status,
    Device.cert_serial,
    Device.rev,
    Device.last_seen_at,
    Device.latest_assignment_id,
    Device.latest_assignment_state,
    Device.inventory_fingerprint,
).where(Device.id == bindparam("device_id"))


@dataclass(frozen=True, slots=True)
class _CompiledRead:
    sql: str
    positional: bool
    processors: tuple[Callable[[Any], Any] | None, ...]


_compiled_reads: weakref.WeakKeyDictionary[Engine, _CompiledRead] = weakref.WeakKeyDictionary()


def _read_device_row(engine: Engine, device_id: str) -> tuple[Any, ...] | None:
    """``_AUTH_ROW`` for one device: the one database read of an unchanged poll.

    Every request of every device comes here, so this read skips the unit of work that
    ``Database.read()`` wraps around reads: on SQLite the session, the BEGIN and the ROLLBACK
    around a one-row primary-key SELECT cost several times the SELECT itself. A single
    statement is atomic on its own, so it needs no transaction. The SQL is SQLAlchemy's, compiled
    once per engine for its dialect, with the column types' own result processing (aware UTC
    datetimes); the connection comes from the engine's pool and goes back to it, which resets it.
    """
    read = _compiled_reads.get(engine)
    if read is None:
        dialect = engine.dialect
        compiled = _AUTH_ROW.compile(dialect=dialect)
        read = _CompiledRead(
            compiled.string,
            compiled.positional,
            tuple(
                c.type.dialect_impl(dialect).result_processor(dialect, None)
                for c in _AUTH_ROW.selected_columns
            ),
        )
        _compiled_reads[engine] = read
    params: tuple[str] | dict[str, str] = (
        (device_id,) if read.positional else {"device_id": device_id}
    )
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        try:
            cursor.execute(read.sql, params)
            row = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        conn.close()
    if row is None:
        return None
    return tuple(v if p is None else p(v) for p, v in zip(read.processors, row, strict=True))


@dataclass(frozen=True, slots=True)
class DeviceSession:
    device_id: str
    rev: int
    latest_assignment_id: int | None
    latest_assignment_state: str | None
    inventory_fingerprint: str | None
    #: Serial of the certificate that opened this session (always the device's current one).
    cert_serial: str = ""

    @property
    def actor(self) -> str:
        return f"device:{self.device_id}"


def authenticate(ctx: ServerContext, token: str | None, *, now: datetime) -> DeviceSession:
    """Check the session token and, on the same row read, revocation (ADR 0001).

    Raises:
        AuthenticationError: missing/invalid/expired token, revoked device, replaced cert.
    """
    if not token:
        raise AuthenticationError("device session token required")
    claims = verify_token(ctx.secret, token, now=now)
    row = _read_device_row(ctx.db.engine, claims.device_id)
    if row is None:
        raise AuthenticationError("device is unknown or revoked")
    status, cert_serial, rev, last_seen_at, latest_id, latest_state, fingerprint = row
    if status != "active":
        raise AuthenticationError("device is unknown or revoked")
    if cert_serial != claims.cert_serial:
        raise AuthenticationError("session belongs to a certificate that was replaced or revoked")
    flush_every = timedelta(seconds=ctx.settings.presence_flush_seconds)
    if last_seen_at is None or now - last_seen_at >= flush_every:
        ctx.presence.saw(claims.device_id, now)
    return DeviceSession(
        claims.device_id, rev, latest_id, latest_state, fingerprint, claims.cert_serial
    )


def etag_for(ctx: ServerContext, device: DeviceSession) -> str:
    return f'"{device.rev}.{ctx.settings.poll_interval_seconds}"'


def poll(ctx: ServerContext, device: DeviceSession) -> PollResponse:
    """The full poll answer (the caller already decided it is not a 304)."""
    action = None
    if device.latest_assignment_state in _ACTIVE and device.latest_assignment_id is not None:
        with ctx.db.read() as s:
            action = _action(s, device.latest_assignment_id)
    return PollResponse(
        device_id=device.device_id,
        poll_interval_seconds=ctx.settings.poll_interval_seconds,
        action=action,
        inventory_fingerprint=device.inventory_fingerprint,
    )


def _action(s: Session, assignment_id: int) -> Action | None:
    a = s.get(Assignment, assignment_id)
    if a is None or a.state not in _ACTIVE:
        return None
    release = s.get(Release, a.release_id)
    if release is None:  # foreign key: only a corrupt database gets here
        raise NotFoundError("release vanished")
    arts = s.scalars(
        select(Artifact)
        .join(ReleaseArtifact, ReleaseArtifact.artifact_id == Artifact.id)
        .where(ReleaseArtifact.release_id == release.id)
        .order_by(ReleaseArtifact.position)
    ).all()
    swap = deltas.delta_for(s, a.delta_artifact_id)
    if swap is not None:
        arts = [swap[1] if art.id == swap[0] else art for art in arts]
    hooks: dict[str, list[HealthCheck]] = {"pre_install": [], "post_install": []}
    emergency = False
    if a.rollout_id is not None:
        r = s.get(Rollout, a.rollout_id)
        if r is not None:
            spec = r.strategy.get("hooks", {})
            hooks = {
                "pre_install": [HealthCheck(command=c) for c in spec.get("pre", [])],
                "post_install": [HealthCheck(command=c) for c in spec.get("post", [])],
            }
            emergency = r.emergency
    return Action(
        assignment_id=a.id,
        state=lifecycle.AssignmentState(a.state),
        release_name=release.name,
        release_version=release.version,
        artifacts=[
            ArtifactRef(
                id=art.id,
                name=art.name,
                version=art.version,
                type=art.type,
                sha256=art.sha256,
                size=art.size,
                url=f"/device/v1/artifacts/{art.sha256}",
                meta=art.meta,
            )
            for art in arts
        ],
        health_checks=[HealthCheck.model_validate(h) for h in release.health_checks],
        emergency=emergency,
        **hooks,
    )


def report_status(
    ctx: ServerContext, device: DeviceSession, assignment_id: int, report: StatusReport
) -> StatusAck:
    """Apply a device's status report to its assignment.

    Raises:
        NotFoundError: no such assignment for this device.
        IllegalTransition: the report is not allowed now (e.g. the assignment was cancelled).
    """
    now = ctx.clock()
    with ctx.db.write() as s:
        a = s.get(Assignment, assignment_id, with_for_update=True)
        if a is None or a.device_id != device.device_id:
            raise NotFoundError(f"no assignment {assignment_id} for this device")
        try:
            t = lifecycle.advance(lifecycle.AssignmentState(a.state), report.state)
        except IllegalTransition:
            if a.state == lifecycle.AssignmentState.CANCELLED:
                raise IllegalTransition(f"assignment {assignment_id} was cancelled") from None
            raise
        if not t.changed:
            if t.after is report.state and (report.progress, report.detail) != (
                a.progress,
                a.detail,
            ):
                a.progress, a.detail, a.updated_at = report.progress, report.detail, now
            return StatusAck(state=t.after, changed=False)
        if t.after is lifecycle.AssignmentState.INSTALLING:
            opens = install_deferral(s, a, now=now)
            if opens is not None:
                raise Deferred(
                    f"outside every maintenance window of this device; next opens {opens:%Y-%m-%d %H:%M} UTC",
                    retry_after=(opens - now).total_seconds(),
                )
        _apply_transition(s, a, t, report, device_id=device.device_id, now=now)
        on_assignment_change(s, a, now=now)
        if a.rollout_id is not None:
            ctx.wake_controller()
        audit.record(
            s,
            at=now,
            actor=device.actor,
            action=f"assignment.{t.after.value}",
            target_type="assignment",
            target_id=a.id,
            before={"state": t.before.value},
            after={"state": t.after.value, "detail": report.detail},
        )
        return StatusAck(state=t.after, changed=True)


def _apply_transition(
    s: Session,
    a: Assignment,
    t: lifecycle.Transition,
    report: StatusReport,
    *,
    device_id: str,
    now: datetime,
) -> None:
    """Store a changed assignment state, its event, and what it changes on the device row."""
    a.state, a.detail, a.progress, a.updated_at = t.after.value, report.detail, report.progress, now
    if t.finished:
        a.finished_at = now
    s.add(AssignmentEvent(assignment_id=a.id, at=now, state=t.after.value, detail=report.detail))
    dev = s.get(Device, device_id, with_for_update=True)
    if dev is None:  # foreign key: only a corrupt database gets here
        raise NotFoundError("device vanished")
    dev.rev += 1  # the poll answer changes: new ETag
    if dev.latest_assignment_id == a.id:
        dev.latest_assignment_state = t.after.value
    if t.after is lifecycle.AssignmentState.SUCCEEDED:
        release = s.get(Release, a.release_id)
        if release is None:  # foreign key: only a corrupt database gets here
            raise NotFoundError("release vanished")
        dev.installed_release = f"{release.name}@{release.version}"


def store_inventory(
    ctx: ServerContext, device: DeviceSession, inventory: Inventory
) -> InventoryAck:
    document = inventory.model_dump(mode="json")
    fp = fingerprint(document)
    if fp == device.inventory_fingerprint:
        return InventoryAck(fingerprint=fp, changed=False)
    now = ctx.clock()
    facts = {
        "name": inventory.hostname,
        "site": inventory.site,
        "zone": inventory.zone,
        "hardware_model": inventory.hardware_model,
        "os_name": inventory.os_name,
        "os_version": inventory.os_version,
        "kernel": inventory.kernel,
        "arch": inventory.arch,
        "agent_version": inventory.agent_version,
    }
    with ctx.db.write() as s:
        row = s.get(Device, device.device_id, with_for_update=True)
        if row is None:
            raise NotFoundError("device vanished")
        if row.inventory_fingerprint == fp:
            return InventoryAck(fingerprint=fp, changed=False)
        before = {k: getattr(row, k) for k in facts} | {"reported_labels": row.reported_labels}
        s.add(
            InventorySnapshot(device_id=row.id, collected_at=now, fingerprint=fp, document=document)
        )
        for k, v in facts.items():
            setattr(row, k, v)
        if inventory.installed_release:
            row.installed_release = inventory.installed_release
        row.reported_labels = dict(inventory.labels)
        row.inventory_fingerprint = fp
        row.rev = row.rev + 1
        after = facts | {"reported_labels": row.reported_labels, "fingerprint": fp}
        audit.record(
            s,
            at=now,
            actor=device.actor,
            action="device.inventory",
            target_type="device",
            target_id=row.id,
            before=before,
            after=after,
        )
    return InventoryAck(fingerprint=fp, changed=True)


def authorize_artifact(ctx: ServerContext, device: DeviceSession, sha256: str) -> None:
    """A device may fetch only artifacts of its unfinished assignments.

    Raises:
        NotFoundError: not assigned to this device (404, so nothing leaks about other blobs).
    """
    mine = and_(
        Assignment.device_id == device.device_id,
        Assignment.state.in_(_ACTIVE),
        Artifact.sha256 == sha256,
    )
    of_release = exists().where(
        mine,
        ReleaseArtifact.release_id == Assignment.release_id,
        Artifact.id == ReleaseArtifact.artifact_id,
    )
    shipped_delta = exists().where(mine, Artifact.id == Assignment.delta_artifact_id)
    with ctx.db.read() as s:
        allowed = s.scalar(select(or_(of_release, shipped_delta)))
    if not allowed:
        raise NotFoundError("no such artifact for this device")
