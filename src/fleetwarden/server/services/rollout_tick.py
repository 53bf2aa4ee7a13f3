"""The rollout controller's tick: build each running rollout's view from the database, ask
``core.rollout.planner.plan_tick`` what to do, and apply it in one transaction, with audit
records and progress snapshots for the dashboard's chart."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from fleetwarden.core import assignments as lifecycle
from fleetwarden.core.rollout.lifecycle import ACTIVE_STATES, RolloutState, Verb
from fleetwarden.core.rollout.planner import Member, MemberStatus, RolloutView, Tick, plan_tick
from fleetwarden.errors import ConflictError
from fleetwarden.protocol.rollouts import StrategySpec
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import (
    Assignment,
    Device,
    Release,
    Rollout,
    RolloutEvent,
    RolloutMember,
)
from fleetwarden.server.services import audit, windows
from fleetwarden.server.services.deployments import cancel_in_session, create_assignment
from fleetwarden.server.services.devices import select_devices
from fleetwarden.server.services.rollouts import (
    CONTROLLER,
    counts,
    eligible,
    event,
    member_rows,
    release_ids_by_label,
    send_back,
    strategy_of,
    transition,
)

__all__ = ["tick_all"]

_ACTIVE = [s.value for s in lifecycle.ACTIVE_STATES]
_PROGRESS_EVERY = timedelta(seconds=30)
#: How often a dynamic rollout rescans the fleet for newly matching devices.
_DYNAMIC_EVERY = 30.0


def tick_all(ctx: ServerContext) -> int:
    """One controller pass over every running rollout; returns how many changed."""
    with ctx.db.read() as s:
        ids = list(
            s.scalars(select(Rollout.id).where(Rollout.state.in_([x.value for x in ACTIVE_STATES])))
        )
    return sum(1 for rid in ids if _tick(ctx, rid))


def _tick(ctx: ServerContext, rollout_id: int) -> bool:
    now = ctx.clock()
    with ctx.db.write() as s:
        r = s.get(Rollout, rollout_id, with_for_update=True)
        if r is None:
            return False
        if r.state == RolloutState.ROLLING_BACK.value:
            return _finish_rollback(s, r, now)
        if r.state != RolloutState.RUNNING.value:
            return False
        spec = strategy_of(r)
        release = s.get(Release, r.release_id)
        if release is None:
            return False
        if spec.dynamic and ctx.due(f"rollout-{r.id}-dynamic", _DYNAMIC_EVERY):
            _add_new_devices(s, r, release, spec)
        view, devices = _view(s, r, spec)
        tick = plan_tick(view, now)
        _apply(s, r, release, tick, devices, now=now)
        _progress(s, r, now=now, force=tick.changes)
        return tick.changes


def _view(s: Session, r: Rollout, spec: StrategySpec) -> tuple[RolloutView, dict[str, Device]]:
    rows = s.scalars(
        select(RolloutMember)
        .where(RolloutMember.rollout_id == r.id)
        .order_by(RolloutMember.wave, RolloutMember.position)
    ).all()
    ids = [m.device_id for m in rows]
    devices = {d.id: d for d in s.scalars(select(Device).where(Device.id.in_(ids)))} if ids else {}
    busy: dict[str, int] = {}
    if ids:
        active = select(Assignment.device_id, Assignment.id).where(
            Assignment.device_id.in_(ids), Assignment.state.in_(_ACTIVE)
        )
        busy = {device_id: aid for device_id, aid in s.execute(active)}  # noqa: C416 - rows, not pairs
    all_windows = windows.load_windows(s)
    dev_windows = windows.device_windows(devices.values(), all_windows) if all_windows else {}
    members = [
        Member(
            device_id=m.device_id,
            wave=m.wave,
            group=m.group_key,
            model=m.model,
            status=MemberStatus(m.status),
            since=m.since,
            finished_at=m.finished_at,
            attempts=m.attempts,
            windows=dev_windows.get(m.device_id, ()),
            blocked=m.device_id in busy and busy[m.device_id] != m.assignment_id,
        )
        for m in rows
    ]
    # Members whose device vanished or was revoked count for nothing.
    for m in members:
        d = devices.get(m.device_id)
        if d is None or d.status != "active":
            m.status = MemberStatus.SKIPPED
    states = _states(s, [m.assignment_id for m in rows if m.assignment_id])
    for m, row in zip(members, rows, strict=True):
        if row.assignment_id in states:
            m.state = states[row.assignment_id]
    view = RolloutView(
        strategy=spec.to_core(),
        members=members,
        windows={wid: w for wid, (w, _) in all_windows.items()},
        current_wave=r.current_wave,
        wave_count=r.wave_count,
        wave_completed_at=r.wave_completed_at,
        emergency=r.emergency,
    )
    return view, devices


def _states(s: Session, assignment_ids: list[int]) -> dict[int, lifecycle.AssignmentState]:
    if not assignment_ids:
        return {}
    return {
        aid: lifecycle.AssignmentState(state)
        for aid, state in s.execute(
            select(Assignment.id, Assignment.state).where(Assignment.id.in_(assignment_ids))
        )
    }


def _apply(
    s: Session, r: Rollout, release: Release, t: Tick, devices: dict[str, Device], *, now: datetime
) -> None:
    members = {
        m.device_id: m
        for m in s.scalars(select(RolloutMember).where(RolloutMember.rollout_id == r.id))
    }
    _apply_withdrawals(s, t, members, now=now)
    assigned = _apply_assignments(s, r, release, t, devices, members, now=now)
    _apply_progress(s, r, t, now=now)
    if assigned or t.timeouts:
        audit.record(
            s,
            at=now,
            actor=CONTROLLER,
            action="rollout.tick",
            target_type="rollout",
            target_id=r.id,
            after={
                "assigned": assigned[:1000],
                "timed_out": t.timeouts[:1000],
                "wave": r.current_wave,
            },
        )
    r.updated_at = now


def _apply_withdrawals(
    s: Session, t: Tick, members: dict[str, RolloutMember], *, now: datetime
) -> None:
    for did in t.timeouts:
        m = members[did]
        if m.assignment_id is not None:
            _time_out(s, m.assignment_id, now=now)
        m.status, m.finished_at = MemberStatus.FAILED.value, now
    reason = f"rollout aborted: {t.abort}" if t.abort else "maintenance window ended"
    for did in t.cancel:
        m = members[did]
        if m.assignment_id is not None:
            with contextlib.suppress(ConflictError):
                cancel_in_session(s, m.assignment_id, actor=CONTROLLER, now=now, reason=reason)
        if not t.abort:  # back in line for the next window; the withdrawn try does not count
            m.status, m.attempts = MemberStatus.WAITING.value, max(0, m.attempts - 1)


def _apply_assignments(
    s: Session,
    r: Rollout,
    release: Release,
    t: Tick,
    devices: dict[str, Device],
    members: dict[str, RolloutMember],
    *,
    now: datetime,
) -> list[str]:
    assigned = []
    for did in t.assign:
        d, m = devices.get(did), members[did]
        if d is None:
            continue
        try:
            with s.begin_nested():
                a = create_assignment(
                    s,
                    d,
                    release.id,
                    now=now,
                    rollout_id=r.id,
                    detail=f"rollout {r.id} wave {m.wave}",
                )
        except DBIntegrityError:
            continue  # took an assignment elsewhere since the view was read: next tick
        m.status, m.assignment_id, m.since, m.finished_at = (
            MemberStatus.ACTIVE.value,
            a.id,
            now,
            None,
        )
        m.attempts += 1
        assigned.append(did)
    return assigned


def _apply_progress(s: Session, r: Rollout, t: Tick, *, now: datetime) -> None:
    """Waves and state: gate reached, next wave, pause, abort (and rollback), finish."""
    if t.wave_completed_at is not None:
        r.wave_completed_at = t.wave_completed_at
        event(
            s,
            r,
            now=now,
            kind="wave_gate",
            actor=CONTROLLER,
            message=f"wave {r.current_wave} reached its success gate",
        )
    if t.advance_to is not None:
        r.current_wave, r.wave_completed_at = t.advance_to, None
        event(s, r, now=now, kind="wave", actor=CONTROLLER, message=f"wave {t.advance_to} started")
    if t.pause:
        transition(s, r, Verb.GATE_PAUSE, reason=t.pause, now=now)
    if t.abort:
        rolled = send_back(s, r, now=now, only_wave=r.current_wave) if t.rollback else 0
        verb = Verb.ABORT_AND_ROLLBACK if t.rollback else Verb.ABORT
        note = f"; rolling back {rolled} device(s)" if rolled else ""
        transition(s, r, verb, reason=t.abort + note, now=now)
    if t.finished:
        r.finished_at = now
        transition(s, r, Verb.FINISH, reason="", now=now)


def _time_out(s: Session, assignment_id: int, *, now: datetime) -> None:
    a = s.get(Assignment, assignment_id, with_for_update=True)
    if a is None or a.state not in _ACTIVE:
        return
    t = lifecycle.advance(lifecycle.AssignmentState(a.state), lifecycle.AssignmentState.FAILED)
    a.state, a.detail, a.updated_at, a.finished_at = (
        t.after.value,
        "timed out in progress",
        now,
        now,
    )
    d = s.get(Device, a.device_id)
    if d is not None:
        d.rev += 1
        if d.latest_assignment_id == a.id:
            d.latest_assignment_state = a.state


def _finish_rollback(s: Session, r: Rollout, now: datetime) -> bool:
    pending = s.scalar(
        select(func.count())
        .select_from(Assignment)
        .where(Assignment.rollout_id == r.id, Assignment.state.in_(_ACTIVE))
    )
    if pending:
        return False
    transition(s, r, Verb.ROLLBACK_DONE, reason=r.reason, now=now)
    r.finished_at = now
    return True


def _add_new_devices(s: Session, r: Rollout, release: Release, spec: StrategySpec) -> None:
    """Dynamic rollouts: devices that started matching join the last wave."""
    known = set(s.scalars(select(RolloutMember.device_id).where(RolloutMember.rollout_id == r.id)))
    fresh = [d for d in select_devices(s, r.selector) if d.id not in known]
    if not fresh:
        return
    fresh, _ = eligible(s, fresh, release)
    if not fresh:
        return
    last = max(r.wave_count - 1, 0)
    position = (
        s.scalar(select(func.max(RolloutMember.position)).where(RolloutMember.rollout_id == r.id))
        or 0
    ) + 1
    s.execute(
        insert(RolloutMember),
        member_rows(
            r.id,
            fresh,
            [[d.id for d in fresh]],
            spec,
            release_ids_by_label(s),
            first_wave=last,
            first_position=position,
        ),
    )
    r.wave_count = max(r.wave_count, 1)


def _progress(s: Session, r: Rollout, *, now: datetime, force: bool) -> None:
    last = s.scalar(
        select(func.max(RolloutEvent.at)).where(
            RolloutEvent.rollout_id == r.id, RolloutEvent.kind == "progress"
        )
    )
    if not force and last is not None and now - last < _PROGRESS_EVERY:
        return
    event(s, r, now=now, kind="progress", actor=CONTROLLER, counts=counts(s, r.id))
