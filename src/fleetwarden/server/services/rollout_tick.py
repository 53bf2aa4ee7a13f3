"""The rollout controller's tick: build each running rollout's view from the database, ask
``core.rollout.planner.plan_tick`` what to do, and apply it in one transaction, with audit
records and progress snapshots for the dashboard's chart."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TypeVar

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

T = TypeVar("T")

_ACTIVE = [s.value for s in lifecycle.ACTIVE_STATES]
_PROGRESS_EVERY = timedelta(seconds=30)
#: Member statuses the planner assigns from (first try, or a retry of a failure).
_ASSIGNABLE = (MemberStatus.WAITING.value, MemberStatus.FAILED.value)
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
    """Read the rollout in a read transaction, plan, then apply in a short write transaction.

    Reading 10,000 members inside the write transaction held SQLite's write lock long enough
    to starve device reports. The split is safe because only this controller (one leader)
    creates rollout assignments, and the write re-checks what the plan relied on: the rollout
    row unchanged (state, wave, verb time), each timed-out assignment still in progress, each
    withdrawn one really withdrawn. A stale view only ever sees more devices busy than there
    are, which keeps budgets and rates on the safe side.
    """
    now = ctx.clock()
    with ctx.db.read() as s:
        r = s.get(Rollout, rollout_id)
        if r is None:
            return False
        state, spec = r.state, strategy_of(r)
    if state == RolloutState.ROLLING_BACK.value:
        return _rollback_step(ctx, rollout_id, now)
    if state != RolloutState.RUNNING.value:
        return False
    if spec.dynamic and ctx.due(f"rollout-{rollout_id}-dynamic", _DYNAMIC_EVERY):
        with ctx.db.write() as s:
            r = s.get(Rollout, rollout_id, with_for_update=True)
            release = s.get(Release, r.release_id) if r is not None else None
            if r is not None and release is not None:
                _add_new_devices(s, r, release, spec)
    with ctx.db.read() as s:
        r = s.get(Rollout, rollout_id)
        if r is None or r.state != RolloutState.RUNNING.value:
            return False
        seen, view = _fingerprint(r), _view(s, r, spec)
    tick = plan_tick(view, now)
    with ctx.db.write() as s:
        r = s.get(Rollout, rollout_id, with_for_update=True)
        release = s.get(Release, r.release_id) if r is not None else None
        if r is None or release is None or _fingerprint(r) != seen:
            return False  # an operator acted meanwhile: plan again on the next tick
        _apply(s, r, release, tick, now=now)
        _progress(s, r, now=now, force=tick.changes)
        return tick.changes


def _rollback_step(ctx: ServerContext, rollout_id: int, now: datetime) -> bool:
    with ctx.db.write() as s:
        r = s.get(Rollout, rollout_id, with_for_update=True)
        if r is None or r.state != RolloutState.ROLLING_BACK.value:
            return False
        return _finish_rollback(s, r, now)


def _fingerprint(r: Rollout) -> tuple[object, ...]:
    """What a plan depends on of the rollout row; operators' verbs always change it."""
    return (r.state, r.current_wave, r.wave_count, r.updated_at, r.emergency, r.wave_completed_at)


def _view(s: Session, r: Rollout, spec: StrategySpec) -> RolloutView:
    rows = s.execute(
        select(
            RolloutMember.device_id,
            RolloutMember.wave,
            RolloutMember.group_key,
            RolloutMember.model,
            RolloutMember.status,
            RolloutMember.since,
            RolloutMember.finished_at,
            RolloutMember.attempts,
            RolloutMember.assignment_id,
        )
        .where(RolloutMember.rollout_id == r.id)
        .order_by(RolloutMember.wave, RolloutMember.position)
    ).all()
    ids = [m.device_id for m in rows]
    status: dict[str, str] = {}
    busy: dict[str, int] = {}
    for chunk in _chunks(ids):
        q = select(Device.id, Device.status).where(Device.id.in_(chunk))
        status.update((did, st) for did, st in s.execute(q))
        active = select(Assignment.device_id, Assignment.id).where(
            Assignment.device_id.in_(chunk), Assignment.state.in_(_ACTIVE)
        )
        busy.update((did, aid) for did, aid in s.execute(active))
    all_windows = windows.load_windows(s)
    dev_windows: dict[str, tuple[int, ...]] = {}
    if all_windows:
        for chunk in _chunks(ids):
            devices = s.scalars(select(Device).where(Device.id.in_(chunk)))
            dev_windows.update(windows.device_windows(devices, all_windows))
    states = _states(s, [m.assignment_id for m in rows if m.assignment_id])
    members = []
    for m in rows:
        member = Member(
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
        # Members whose device vanished or was revoked count for nothing.
        if status.get(m.device_id) != "active":
            member.status = MemberStatus.SKIPPED
        if m.assignment_id in states:
            member.state = states[m.assignment_id]
        members.append(member)
    return RolloutView(
        strategy=spec.to_core(),
        members=members,
        windows={wid: w for wid, (w, _) in all_windows.items()},
        current_wave=r.current_wave,
        wave_count=r.wave_count,
        wave_completed_at=r.wave_completed_at,
        emergency=r.emergency,
    )


#: Bound parameter lists: SQLite allows 32,766 variables per statement, PostgreSQL 65,535.
_CHUNK = 5000


def _chunks(items: list[T]) -> Iterator[list[T]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _states(s: Session, assignment_ids: list[int]) -> dict[int, lifecycle.AssignmentState]:
    out: dict[int, lifecycle.AssignmentState] = {}
    for chunk in _chunks(assignment_ids):
        q = select(Assignment.id, Assignment.state).where(Assignment.id.in_(chunk))
        out.update((aid, lifecycle.AssignmentState(state)) for aid, state in s.execute(q))
    return out


def _apply(s: Session, r: Rollout, release: Release, t: Tick, *, now: datetime) -> None:
    touched = [*t.timeouts, *t.cancel, *t.assign]
    members: dict[str, RolloutMember] = {}
    for chunk in _chunks(touched):
        q = select(RolloutMember).where(
            RolloutMember.rollout_id == r.id, RolloutMember.device_id.in_(chunk)
        )
        members.update((m.device_id, m) for m in s.scalars(q))
    devices: dict[str, Device] = {}
    for chunk in _chunks(list(t.assign)):
        devices.update((d.id, d) for d in s.scalars(select(Device).where(Device.id.in_(chunk))))
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
        m = members.get(did)
        if m is None:
            continue
        # The device may have finished since the view was read: then its report stands.
        if m.assignment_id is None or _time_out(s, m.assignment_id, now=now):
            m.status, m.finished_at = MemberStatus.FAILED.value, now
    reason = f"rollout aborted: {t.abort}" if t.abort else "maintenance window ended"
    for did in t.cancel:
        m = members.get(did)
        if m is None:
            continue
        withdrawn = m.assignment_id is None
        if m.assignment_id is not None:
            with contextlib.suppress(ConflictError):
                a = cancel_in_session(s, m.assignment_id, actor=CONTROLLER, now=now, reason=reason)
                withdrawn = a.state == lifecycle.AssignmentState.CANCELLED.value
        if withdrawn and not t.abort:
            # Back in line for the next window; the withdrawn try does not count.
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
        d, m = devices.get(did), members.get(did)
        if d is None or m is None or m.status not in _ASSIGNABLE:
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


def _time_out(s: Session, assignment_id: int, *, now: datetime) -> bool:
    """Fail an assignment still in progress; False if it ended meanwhile."""
    a = s.get(Assignment, assignment_id, with_for_update=True)
    if a is None or a.state not in _ACTIVE:
        return False
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
    return True


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
