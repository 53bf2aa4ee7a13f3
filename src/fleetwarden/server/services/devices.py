"""Operator views and verbs on devices: list, show, label, revoke, fleet summary."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from fleetwarden.core import selector as sel
from fleetwarden.core.assignments import AssignmentState
from fleetwarden.core.fleet import DeviceFacts, DeviceState, derive_state, summarize
from fleetwarden.core.inventory import selector_attributes
from fleetwarden.errors import NotFoundError
from fleetwarden.protocol.api import (
    AssignmentOut,
    DeviceDetail,
    DeviceOut,
    FleetSummary,
    InventoryOut,
    LabelsPatch,
    Page,
)
from fleetwarden.protocol.device import Inventory
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import (
    Assignment,
    Device,
    DeviceCertificate,
    InventorySnapshot,
    Release,
)
from fleetwarden.server.services import audit

__all__ = [
    "assignment_out",
    "attributes",
    "device_out",
    "get_device",
    "list_devices",
    "patch_labels",
    "revoke_device",
    "summary",
]


def attributes(d: Device) -> dict[str, str]:
    """What a selector sees of a device (core.inventory rule 2)."""
    return selector_attributes(
        device_id=d.id,
        name=d.name,
        labels={**d.reported_labels, **d.labels},
        facts={
            "site": d.site or None,
            "zone": d.zone or None,
            "model": d.hardware_model or None,
            "os": d.os_name or None,
            "os_version": d.os_version or None,
            "kernel": d.kernel or None,
            "arch": d.arch or None,
            "release": d.installed_release or None,
        },
    )


def _state(ctx: ServerContext, d: Device, now: datetime) -> DeviceState:
    facts = DeviceFacts(
        revoked=d.status != "active",
        last_seen=d.last_seen_at,
        latest_assignment=AssignmentState(d.latest_assignment_state)
        if d.latest_assignment_state
        else None,
    )
    return derive_state(facts, now=now, offline_after=timedelta(seconds=ctx.settings.offline_after))


def device_out(ctx: ServerContext, d: Device, now: datetime) -> DeviceOut:
    return DeviceOut(
        id=d.id,
        name=d.name,
        state=_state(ctx, d, now),
        site=d.site,
        zone=d.zone,
        hardware_model=d.hardware_model,
        arch=d.arch,
        os_name=d.os_name,
        os_version=d.os_version,
        kernel=d.kernel,
        agent_version=d.agent_version,
        installed_release=d.installed_release,
        labels={**d.reported_labels, **d.labels},
        enrolled_at=d.enrolled_at,
        last_seen_at=d.last_seen_at,
        cert_not_after=d.cert_not_after,
    )


def assignment_out(a: Assignment, release: Release) -> AssignmentOut:
    return AssignmentOut(
        id=a.id,
        device_id=a.device_id,
        deployment_id=a.deployment_id,
        release_id=a.release_id,
        release=f"{release.name}@{release.version}",
        state=AssignmentState(a.state),
        detail=a.detail,
        progress=a.progress,
        created_at=a.created_at,
        updated_at=a.updated_at,
        delta_artifact_id=a.delta_artifact_id,
    )


def select_devices(
    session: Session, selector: str | None, *, search: str | None = None
) -> list[Device]:
    """Devices matching a selector and/or a name/id search, ordered by name.

    Raises:
        SelectorError: the selector does not parse.
    """
    node = sel.parse(selector) if selector else None
    query = select(Device).order_by(Device.name, Device.id)
    if search:
        like = f"%{search}%"
        query = query.where(or_(Device.name.ilike(like), Device.id.ilike(like)))
    rows = session.scalars(query).all()
    if node is None:
        return list(rows)
    return [d for d in rows if sel.matches(node, attributes(d))]


def list_devices(
    ctx: ServerContext,
    *,
    selector: str | None = None,
    search: str | None = None,
    state: DeviceState | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[DeviceOut]:
    now = ctx.clock()
    with ctx.db.read() as s:
        items = [device_out(ctx, d, now) for d in select_devices(s, selector, search=search)]
    if state is not None:
        items = [d for d in items if d.state is state]
    return Page[DeviceOut](items=items[offset : offset + limit], total=len(items))


def get_device(ctx: ServerContext, device_id: str, *, history: int = 50) -> DeviceDetail:
    now = ctx.clock()
    with ctx.db.read() as s:
        d = s.get(Device, device_id)
        if d is None:
            raise NotFoundError(f"no device {device_id!r}")
        snap = s.scalar(
            select(InventorySnapshot)
            .where(InventorySnapshot.device_id == device_id)
            .order_by(InventorySnapshot.collected_at.desc(), InventorySnapshot.id.desc())
            .limit(1)
        )
        rows = s.execute(
            select(Assignment, Release)
            .join(Release, Release.id == Assignment.release_id)
            .where(Assignment.device_id == device_id)
            .order_by(Assignment.id.desc())
            .limit(history)
        ).all()
        inventory = (
            InventoryOut(
                fingerprint=snap.fingerprint,
                collected_at=snap.collected_at,
                inventory=Inventory.model_validate(snap.document),
            )
            if snap
            else None
        )
        return DeviceDetail(
            **device_out(ctx, d, now).model_dump(),
            inventory=inventory,
            assignments=[assignment_out(a, r) for a, r in rows],
        )


def inventory_history(ctx: ServerContext, device_id: str, *, limit: int = 50) -> list[InventoryOut]:
    with ctx.db.read() as s:
        if s.get(Device, device_id) is None:
            raise NotFoundError(f"no device {device_id!r}")
        snaps = s.scalars(
            select(InventorySnapshot)
            .where(InventorySnapshot.device_id == device_id)
            .order_by(InventorySnapshot.collected_at.desc(), InventorySnapshot.id.desc())
            .limit(limit)
        )
        return [
            InventoryOut(
                fingerprint=x.fingerprint,
                collected_at=x.collected_at,
                inventory=Inventory.model_validate(x.document),
            )
            for x in snaps
        ]


def patch_labels(
    ctx: ServerContext, device_id: str, patch: LabelsPatch, *, actor: str
) -> DeviceOut:
    now = ctx.clock()
    with ctx.db.write() as s:
        d = s.get(Device, device_id, with_for_update=True)
        if d is None:
            raise NotFoundError(f"no device {device_id!r}")
        before = dict(d.labels)
        labels = {k: v for k, v in before.items() if k not in set(patch.remove)}
        labels.update(patch.set)
        if labels != before:
            d.labels = labels
            audit.record(
                s,
                at=now,
                actor=actor,
                action="device.label",
                target_type="device",
                target_id=device_id,
                before={"labels": before},
                after={"labels": labels},
            )
        return device_out(ctx, d, now)


def revoke_device(ctx: ServerContext, device_id: str, *, actor: str, reason: str = "") -> DeviceOut:
    """Revoke a device and its certificate; its next request on any replica is refused."""
    now = ctx.clock()
    with ctx.db.write() as s:
        d = s.get(Device, device_id, with_for_update=True)
        if d is None:
            raise NotFoundError(f"no device {device_id!r}")
        if d.status != "revoked":
            before = {"status": d.status, "cert_serial": d.cert_serial}
            d.status = "revoked"
            s.execute(
                update(DeviceCertificate)
                .where(
                    DeviceCertificate.device_id == device_id, DeviceCertificate.revoked_at.is_(None)
                )
                .values(revoked_at=now)
            )
            d.rev += 1
            audit.record(
                s,
                at=now,
                actor=actor,
                action="device.revoke",
                target_type="device",
                target_id=device_id,
                before=before,
                after={"status": "revoked", "reason": reason},
            )
        return device_out(ctx, d, now)


def summary(ctx: ServerContext) -> FleetSummary:
    now = ctx.clock()
    with ctx.db.read() as s:
        devices = s.scalars(select(Device)).all()
        states = summarize(_state(ctx, d, now) for d in devices)
        releases = Counter(d.installed_release or "(none)" for d in devices if d.status == "active")
        oses = Counter(
            f"{d.os_name} {d.os_version}".strip() or "(unknown)"
            for d in devices
            if d.status == "active"
        )
        assignment_states = Counter(
            d.latest_assignment_state for d in devices if d.latest_assignment_state
        )
    return FleetSummary(
        total=len(devices),
        states={k.value: v for k, v in states.items()},
        releases=_ranked(releases),
        os_versions=_ranked(oses),
        assignments=_ranked(assignment_states),
    )


def _ranked(counts: Counter[str]) -> dict[str, int]:
    """Highest count first, ties by name: a stable order for dashboards and diffs."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
