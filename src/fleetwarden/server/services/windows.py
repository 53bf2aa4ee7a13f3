"""Maintenance windows: CRUD, and which windows apply to which devices."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetwarden.core import selector as sel
from fleetwarden.core.rollout.windows import Window
from fleetwarden.errors import ConflictError, NotFoundError
from fleetwarden.protocol.rollouts import WindowCreate, WindowOut
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import Device, MaintenanceWindow
from fleetwarden.server.services import audit
from fleetwarden.server.services.devices import attributes

__all__ = ["create_window", "delete_window", "device_windows", "list_windows", "load_windows"]


def _core(w: MaintenanceWindow) -> Window:
    return Window(w.cron, timedelta(seconds=w.duration_seconds), w.timezone)


def _out(w: MaintenanceWindow, now: datetime) -> WindowOut:
    core = _core(w)
    return WindowOut(
        id=w.id,
        name=w.name,
        cron=w.cron,
        duration=timedelta(seconds=w.duration_seconds),
        timezone=w.timezone,
        selector=w.selector,
        open_now=core.is_open(now),
        next_open=core.next_open(now),
    )


def create_window(ctx: ServerContext, body: WindowCreate, *, actor: str) -> WindowOut:
    """Raises ``InputError`` for a bad schedule/zone/selector, ``ConflictError`` for a name clash."""
    Window(body.cron, body.duration, body.timezone)  # validates (core.rollout.windows rule 5)
    sel.parse(body.selector)
    now = ctx.clock()
    with ctx.db.write() as s:
        if s.scalar(select(MaintenanceWindow.id).where(MaintenanceWindow.name == body.name)):
            raise ConflictError(f"a window named {body.name!r} exists")
        w = MaintenanceWindow(
            name=body.name,
            cron=body.cron,
            duration_seconds=int(body.duration.total_seconds()),
            timezone=body.timezone,
            selector=body.selector,
            created_at=now,
            created_by=actor,
        )
        s.add(w)
        s.flush()
        audit.record(
            s,
            at=now,
            actor=actor,
            action="window.create",
            target_type="window",
            target_id=w.id,
            after={
                "name": w.name,
                "cron": w.cron,
                "duration_seconds": w.duration_seconds,
                "timezone": w.timezone,
                "selector": w.selector,
            },
        )
        return _out(w, now)


def list_windows(ctx: ServerContext) -> list[WindowOut]:
    now = ctx.clock()
    with ctx.db.read() as s:
        return [
            _out(w, now)
            for w in s.scalars(select(MaintenanceWindow).order_by(MaintenanceWindow.name))
        ]


def delete_window(ctx: ServerContext, window_id: int, *, actor: str) -> None:
    now = ctx.clock()
    with ctx.db.write() as s:
        w = s.get(MaintenanceWindow, window_id)
        if w is None:
            raise NotFoundError(f"no window {window_id}")
        s.delete(w)
        audit.record(
            s,
            at=now,
            actor=actor,
            action="window.delete",
            target_type="window",
            target_id=window_id,
            before={"name": w.name, "cron": w.cron, "selector": w.selector},
        )


def load_windows(s: Session) -> dict[int, tuple[Window, sel.Selector]]:
    return {w.id: (_core(w), sel.parse(w.selector)) for w in s.scalars(select(MaintenanceWindow))}


def device_windows(
    devices: Iterable[Device], windows: dict[int, tuple[Window, sel.Selector]]
) -> dict[str, tuple[int, ...]]:
    """Window ids that apply to each device (by each window's selector)."""
    out: dict[str, tuple[int, ...]] = {}
    for d in devices:
        attrs = attributes(d)
        out[d.id] = tuple(wid for wid, (_, node) in windows.items() if sel.matches(node, attrs))
    return out
