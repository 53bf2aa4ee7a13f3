"""Staged rollouts: create (targets, risk order, waves), the operator verbs, status, and the
controller's tick, which asks ``core.rollout.planner`` what to do and applies it in one
transaction with its audit record.

Choices documented in docs/rollouts.md:
  * A device with an unfinished assignment from elsewhere *waits* (it is "blocked") rather
    than being superseded: interrupting another rollout's device is an operator decision
    (abort that rollout, or cancel the assignment).
  * Gate-triggered abort-and-rollback sends the previous release to the devices of the current
    wave that succeeded (the blast radius the gate measured); a manual abort with rollback
    sends it to every device of the rollout that succeeded.
  * Operator cancellation of a rollout's assignment removes the device from that rollout
    (skipped), so the controller does not immediately assign it again.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from fleetwarden.core import assignments as lifecycle
from fleetwarden.core import selector as sel
from fleetwarden.core.deploy import Candidate as DeployCandidate
from fleetwarden.core.deploy import plan_deployment
from fleetwarden.core.rollout import risk
from fleetwarden.core.rollout.lifecycle import (
    RolloutState,
    Verb,
    apply,
    check_approver,
    initial_state,
)
from fleetwarden.core.rollout.planner import MemberStatus
from fleetwarden.core.rollout.waves import plan_waves
from fleetwarden.core.rollout.windows import any_open, next_open
from fleetwarden.core.tuf_rules import image_path
from fleetwarden.errors import ConflictError, InputError, NotFoundError, PermissionDenied
from fleetwarden.protocol.api import Role
from fleetwarden.protocol.rollouts import (
    MemberOut,
    RiskRow,
    RolloutCreate,
    RolloutEventOut,
    RolloutOut,
    StrategySpec,
    WaveOut,
)
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import (
    Artifact,
    Assignment,
    Device,
    Release,
    ReleaseArtifact,
    Rollout,
    RolloutEvent,
    RolloutMember,
)
from fleetwarden.server.services import audit, windows
from fleetwarden.server.services.deployments import cancel_in_session, create_assignment
from fleetwarden.server.services.devices import attributes, select_devices
from fleetwarden.server.services.tokens import Principal

__all__ = [
    "CONTROLLER",
    "act",
    "create",
    "get",
    "install_deferral",
    "list_members",
    "list_rollouts",
    "transition",
]

CONTROLLER = "system:rollout-controller"
_FINISHED_STATES = [
    lifecycle.AssignmentState.SUCCEEDED.value,
    lifecycle.AssignmentState.FAILED.value,
    lifecycle.AssignmentState.ROLLED_BACK.value,
]
_ACTIVE = [s.value for s in lifecycle.ACTIVE_STATES]


# -- helpers ----------------------------------------------------------------------------------
def _label(r: Release) -> str:
    return f"{r.name}@{r.version}"


def strategy_of(r: Rollout) -> StrategySpec:
    return StrategySpec.model_validate(r.strategy)


def event(
    s: Session,
    r: Rollout,
    *,
    now: datetime,
    kind: str,
    actor: str,
    message: str = "",
    counts: dict[str, int] | None = None,
) -> None:
    s.add(
        RolloutEvent(
            rollout_id=r.id, at=now, kind=kind, actor=actor, message=message, counts=counts
        )
    )


def _risk_model(s: Session) -> risk.RiskModel:
    rows = s.execute(
        select(
            Assignment.hardware_model,
            Assignment.from_release,
            Release.name,
            Release.version,
            Assignment.state,
            func.count(),
        )
        .join(Release, Release.id == Assignment.release_id)
        .where(Assignment.state.in_(_FINISHED_STATES))
        .group_by(
            Assignment.hardware_model,
            Assignment.from_release,
            Release.name,
            Release.version,
            Assignment.state,
        )
    ).all()
    history: dict[tuple[str, str, str], risk.Outcomes] = {}
    for model, frm, name, version, state, n in rows:
        key = (model, frm, f"{name}@{version}")
        ok = state == lifecycle.AssignmentState.SUCCEEDED.value
        prev = history.get(key, risk.Outcomes())
        history[key] = prev + risk.Outcomes(n if ok else 0, 0 if ok else n)
    return risk.RiskModel(history)


def _release_models(s: Session, release_id: int) -> frozenset[str]:
    return frozenset(
        m
        for (cm,) in s.execute(
            select(Artifact.compatible_models)
            .join(ReleaseArtifact, ReleaseArtifact.artifact_id == Artifact.id)
            .where(ReleaseArtifact.release_id == release_id)
        )
        for m in cm
    )


def eligible(
    s: Session, devices: list[Device], release: Release
) -> tuple[list[Device], dict[str, str]]:
    plan = plan_deployment(
        [
            DeployCandidate(d.id, d.status != "active", d.hardware_model, d.installed_release)
            for d in devices
        ],
        release=_label(release),
        compatible_models=_release_models(s, release.id),
        force=False,
    )
    keep = set(plan.assign)
    return [d for d in devices if d.id in keep], plan.skipped


def release_ids_by_label(s: Session) -> dict[str, int]:
    return {
        f"{n}@{v}": i for i, n, v in s.execute(select(Release.id, Release.name, Release.version))
    }


def member_rows(
    rollout_id: int,
    devices: list[Device],
    waves: list[list[str]],
    spec: StrategySpec,
    release_ids: dict[str, int],
    first_wave: int = 0,
    first_position: int = 0,
) -> list[dict[str, Any]]:
    by_id = {d.id: d for d in devices}
    group_by = spec.budget.group_by if spec.budget else "zone"
    rows = []
    position = first_position
    for w, ids in enumerate(waves, start=first_wave):
        for did in ids:
            d = by_id[did]
            attrs = attributes(d)
            rows.append(
                {
                    "rollout_id": rollout_id,
                    "device_id": did,
                    "wave": w,
                    "position": position,
                    "status": MemberStatus.WAITING.value,
                    "group_key": attrs.get(group_by, ""),
                    "model": d.hardware_model,
                    "from_release": d.installed_release,
                    "from_release_id": release_ids.get(d.installed_release),
                    "attempts": 0,
                    "rolled_back": False,
                }
            )
            position += 1
    return rows


# -- create -----------------------------------------------------------------------------------
def create(ctx: ServerContext, body: RolloutCreate, *, actor: str) -> RolloutOut:
    """Choose the targets, order them by criticality and risk, cut them into waves.

    Raises:
        NotFoundError: unknown release. SelectorError: bad selector. InputError: no targets.
    """
    strategy = body.strategy.to_core()
    sel.parse(body.selector)
    now = ctx.clock()
    with ctx.db.write() as s:
        release = s.get(Release, body.release_id)
        if release is None:
            raise NotFoundError(f"no release {body.release_id}")
        devices, skipped = eligible(s, select_devices(s, body.selector), release)
        if not devices:
            detail = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:5])
            raise InputError(
                f"no device can take {_label(release)} for this selector{': ' + detail if detail else ''}"
            )
        model = _risk_model(s) if strategy.use_risk else None
        ordered = risk.order(
            [
                risk.Candidate(
                    d.id,
                    d.hardware_model,
                    d.installed_release,
                    attributes(d).get(strategy.criticality_label),
                )
                for d in devices
            ],
            to_release=_label(release),
            model=model,
        )
        canary_ids = (
            {d.id for d in devices if sel.matches(strategy.canary.selector, attributes(d))}
            if strategy.canary.selector is not None
            else set()
        )
        waves = plan_waves(
            ordered, canary=strategy.canary, canary_matches=canary_ids, spec=strategy.waves
        )
        r = Rollout(
            name=body.name,
            release_id=release.id,
            selector=body.selector,
            strategy=body.strategy.model_dump(mode="json"),
            state=initial_state(approval_required=strategy.approval_required).value,
            emergency=False,
            current_wave=0,
            wave_count=len(waves),
            reason="",
            created_at=now,
            created_by=actor,
            updated_at=now,
        )
        s.add(r)
        s.flush()
        s.execute(
            insert(RolloutMember),
            member_rows(r.id, devices, waves, body.strategy, release_ids_by_label(s)),
        )
        message = f"{len(devices)} devices in {len(waves)} waves ({', '.join(str(len(w)) for w in waves)})"
        if skipped:
            reasons = Counter(
                v.split(" is not compatible")[0] if "compatible" in v else v
                for v in skipped.values()
            )
            message += f"; {len(skipped)} left out: " + ", ".join(
                f"{k} ({n})" for k, n in reasons.most_common(3)
            )
        event(s, r, now=now, kind="created", actor=actor, message=message)
        audit.record(
            s,
            at=now,
            actor=actor,
            action="rollout.create",
            target_type="rollout",
            target_id=r.id,
            after={
                "name": r.name,
                "release": _label(release),
                "selector": r.selector,
                "devices": len(devices),
                "waves": len(waves),
                "skipped": len(skipped),
            },
        )
        s.flush()
        return _out(s, r, release, detail=True)


# -- verbs ------------------------------------------------------------------------------------
def act(
    ctx: ServerContext,
    rollout_id: int,
    verb: Verb,
    *,
    who: Principal,
    reason: str = "",
    emergency: bool = False,
) -> RolloutOut:
    """Apply an operator's verb.

    Raises:
        IllegalTransition: not allowed in the rollout's state. PermissionDenied: four eyes,
        or an emergency start without the admin role.
    """
    now = ctx.clock()
    with ctx.db.write() as s:
        r = s.get(Rollout, rollout_id, with_for_update=True)
        if r is None:
            raise NotFoundError(f"no rollout {rollout_id}")
        before = RolloutState(r.state)
        after = apply(before, verb)
        reason = _verb_effects(s, r, verb, who=who, reason=reason, emergency=emergency, now=now)
        r.state = after.value
        if after in (RolloutState.ABORTED, RolloutState.DENIED):
            r.finished_at = now
        r.reason = (
            reason if verb in (Verb.PAUSE, Verb.ABORT, Verb.ABORT_AND_ROLLBACK, Verb.DENY) else ""
        )
        r.updated_at = now
        message = reason or verb.value.replace("_", " ")
        if emergency:
            message = f"EMERGENCY start (windows and soak ignored): {message}"
        event(s, r, now=now, kind=verb.value, actor=who.actor, message=message)
        audit.record(
            s,
            at=now,
            actor=who.actor,
            action=f"rollout.{verb.value}",
            target_type="rollout",
            target_id=r.id,
            before={"state": before.value},
            after={"state": after.value, "reason": reason, "emergency": r.emergency},
        )
        ctx.wake_controller()
        release = s.get(Release, r.release_id)
        if release is None:  # foreign key: only a corrupt database gets here
            raise NotFoundError("release vanished")
        return _out(s, r, release, detail=True)


def _verb_effects(
    s: Session,
    r: Rollout,
    verb: Verb,
    *,
    who: Principal,
    reason: str,
    emergency: bool,
    now: datetime,
) -> str:
    """What a verb does besides changing the state; returns the reason to record."""
    if verb in (Verb.APPROVE, Verb.DENY):
        check_approver(
            creator=r.created_by,
            approver=who.actor,
            allow_self_approval=strategy_of(r).approval.allow_self,
        )
        r.approved_by = who.actor
    elif verb is Verb.START:
        if emergency and not who.allows(Role.ADMIN):
            raise PermissionDenied("an emergency rollout can only be started by an admin")
        r.emergency, r.started_at = emergency, now
    elif verb is Verb.ADVANCE:
        if r.current_wave >= r.wave_count - 1:
            raise ConflictError("this is the last wave")
        r.current_wave, r.wave_completed_at = r.current_wave + 1, None
    elif verb is Verb.RETRY_FAILED:
        n = s.execute(
            update(RolloutMember)
            .where(
                RolloutMember.rollout_id == r.id, RolloutMember.status == MemberStatus.FAILED.value
            )
            .values(status=MemberStatus.WAITING.value, attempts=0)
        ).rowcount  # type: ignore[attr-defined]
        reason = reason or f"{n} failed device(s) queued again"
    elif verb in (Verb.ABORT, Verb.ABORT_AND_ROLLBACK):
        _withdraw_pending(s, r, now=now, actor=who.actor, reason=f"rollout aborted by {who.actor}")
        if verb is Verb.ABORT_AND_ROLLBACK:
            send_back(s, r, now=now, only_wave=None)
    return reason


def _withdraw_pending(s: Session, r: Rollout, *, now: datetime, actor: str, reason: str) -> None:
    """Cancel this rollout's assignments that have not begun installing."""
    cancellable = [
        lifecycle.AssignmentState.PENDING.value,
        lifecycle.AssignmentState.DOWNLOADING.value,
    ]
    for (aid,) in s.execute(
        select(Assignment.id).where(
            Assignment.rollout_id == r.id, Assignment.state.in_(cancellable)
        )
    ):
        cancel_in_session(s, aid, actor=actor, now=now, reason=reason)


def send_back(s: Session, r: Rollout, *, now: datetime, only_wave: int | None) -> int:
    """Give succeeded members their previous release again; return how many."""
    q = select(RolloutMember).where(
        RolloutMember.rollout_id == r.id,
        RolloutMember.status == MemberStatus.SUCCEEDED.value,
        RolloutMember.rolled_back.is_(False),
    )
    if only_wave is not None:
        q = q.where(RolloutMember.wave == only_wave)
    # Going back is a downgrade, which agents accept only when the image repository withdraws
    # the release they run (core.tuf_rules rule 6): the director alone cannot roll back.
    withdraw_release(s, r.release_id)
    n = 0
    for m in s.scalars(q):
        d = s.get(Device, m.device_id)
        if m.from_release_id is None or d is None or d.status != "active":
            continue
        try:
            with s.begin_nested():
                create_assignment(
                    s,
                    d,
                    m.from_release_id,
                    now=now,
                    rollout_id=r.id,
                    detail=f"rollback of rollout {r.id}",
                )
        except DBIntegrityError:
            continue  # the device is busy with something else; nothing to undo here
        m.rolled_back = True
        n += 1
    return n


def transition(s: Session, r: Rollout, verb: Verb, *, reason: str, now: datetime) -> None:
    before = r.state
    r.state = apply(RolloutState(r.state), verb).value
    if r.state in (RolloutState.ABORTED.value, RolloutState.FINISHED.value):
        r.finished_at = now
    r.reason = reason
    event(s, r, now=now, kind=verb.value, actor=CONTROLLER, message=reason or verb.value)
    audit.record(
        s,
        at=now,
        actor=CONTROLLER,
        action=f"rollout.{verb.value}",
        target_type="rollout",
        target_id=r.id,
        before={"state": before},
        after={"state": r.state, "reason": reason},
    )


# -- device feedback --------------------------------------------------------------------------
def install_deferral(s: Session, a: Assignment, *, now: datetime) -> datetime | None:
    """If this assignment's rollout must wait for a maintenance window before installing, the
    time the next window opens; else None (emergency rollouts and plain deployments never wait)."""
    if a.rollout_id is None:
        return None
    r = s.get(Rollout, a.rollout_id)
    if r is None or r.emergency or not strategy_of(r).windows.respect:
        return None
    d = s.get(Device, a.device_id)
    if d is None:
        return None
    all_windows = windows.load_windows(s)
    mine = [all_windows[w][0] for w in windows.device_windows([d], all_windows)[d.id]]
    if any_open(mine, now):
        return None
    return next_open(mine, now)


def counts(s: Session, rollout_id: int) -> dict[str, int]:
    counts = dict.fromkeys([m.value for m in MemberStatus], 0)
    for status, n in s.execute(
        select(RolloutMember.status, func.count())
        .where(RolloutMember.rollout_id == rollout_id)
        .group_by(RolloutMember.status)
    ):
        counts[status] = n
    return counts


# -- reading ----------------------------------------------------------------------------------
def _out(
    s: Session,
    r: Rollout,
    release: Release,
    *,
    detail: bool,
    model: risk.RiskModel | None = None,
    totals: dict[str, int] | None = None,
) -> RolloutOut:
    totals = dict(totals) if totals is not None else counts(s, r.id)
    totals["total"] = sum(totals.values())
    waves: list[WaveOut] = []
    risk_rows: list[RiskRow] = []
    events: list[RolloutEventOut] = []
    if detail:
        per: dict[int, Counter[str]] = {}
        for wave, status, n in s.execute(
            select(RolloutMember.wave, RolloutMember.status, func.count())
            .where(RolloutMember.rollout_id == r.id)
            .group_by(RolloutMember.wave, RolloutMember.status)
        ):
            per.setdefault(wave, Counter())[status] += n
        waves = [
            WaveOut(
                index=w,
                size=sum(c.values()),
                waiting=c["waiting"],
                active=c["active"],
                succeeded=c["succeeded"],
                failed=c["failed"],
                skipped=c["skipped"],
            )
            for w, c in sorted(per.items())
        ]
        model = model or _risk_model(s)
        label = _label(release)
        for mdl, frm, n in s.execute(
            select(RolloutMember.model, RolloutMember.from_release, func.count())
            .where(RolloutMember.rollout_id == r.id)
            .group_by(RolloutMember.model, RolloutMember.from_release)
        ):
            est = model.estimate(mdl, frm, label)
            risk_rows.append(
                RiskRow(
                    model=mdl,
                    from_release=frm,
                    to_release=label,
                    success=round(est.success, 4),
                    observed=est.observed,
                    devices=n,
                )
            )
        risk_rows.sort(key=lambda x: (x.success, x.model))
        events = _events(s, r.id)
    return RolloutOut(
        id=r.id,
        name=r.name,
        release_id=r.release_id,
        release=_label(release),
        selector=r.selector,
        state=RolloutState(r.state),
        emergency=r.emergency,
        reason=r.reason,
        current_wave=r.current_wave,
        wave_count=r.wave_count,
        created_by=r.created_by,
        approved_by=r.approved_by,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        strategy=r.strategy,
        totals=totals,
        waves=waves,
        risk=risk_rows,
        events=events,
    )


_MAX_TIMELINE = 500
_MAX_CHART_POINTS = 200


def _events(s: Session, rollout_id: int) -> list[RolloutEventOut]:
    """Every decision and verb (newest 500), plus at most 200 progress snapshots spread evenly
    over the whole rollout (always the first and the newest), newest first."""
    base = select(RolloutEvent).where(RolloutEvent.rollout_id == rollout_id)
    timeline = list(
        s.scalars(
            base.where(RolloutEvent.kind != "progress")
            .order_by(RolloutEvent.at.desc(), RolloutEvent.id.desc())
            .limit(_MAX_TIMELINE)
        )
    )
    progress = list(
        s.scalars(
            base.where(RolloutEvent.kind == "progress").order_by(RolloutEvent.at, RolloutEvent.id)
        )
    )
    if len(progress) > _MAX_CHART_POINTS:
        step = (len(progress) - 1) / (_MAX_CHART_POINTS - 1)
        progress = [progress[round(i * step)] for i in range(_MAX_CHART_POINTS)]
    rows = sorted(timeline + progress, key=lambda e: (e.at, e.id), reverse=True)
    return [
        RolloutEventOut(at=e.at, kind=e.kind, actor=e.actor, message=e.message, counts=e.counts)
        for e in rows
    ]


def get(ctx: ServerContext, rollout_id: int) -> RolloutOut:
    with ctx.db.read() as s:
        r = s.get(Rollout, rollout_id)
        if r is None:
            raise NotFoundError(f"no rollout {rollout_id}")
        release = s.get(Release, r.release_id)
        if release is None:
            raise NotFoundError("release vanished")
        model = ctx.memo("rollout-risk-model", 30.0, lambda: _risk_model(s))
        return _out(s, r, release, detail=True, model=model)


def list_rollouts(ctx: ServerContext) -> list[RolloutOut]:
    with ctx.db.read() as s:
        rows = s.execute(
            select(Rollout, Release)
            .join(Release, Release.id == Rollout.release_id)
            .order_by(Rollout.id.desc())
        ).all()
        per = _counts_by_rollout(s)
        return [_out(s, r, rel, detail=False, totals=per.get(r.id)) for r, rel in rows]


def _counts_by_rollout(s: Session) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {}
    for rid, status, n in s.execute(
        select(RolloutMember.rollout_id, RolloutMember.status, func.count()).group_by(
            RolloutMember.rollout_id, RolloutMember.status
        )
    ):
        out.setdefault(rid, dict.fromkeys([m.value for m in MemberStatus], 0))[status] = n
    return out


def list_members(
    ctx: ServerContext,
    rollout_id: int,
    *,
    wave: int | None = None,
    status: str | None = None,
    limit: int = 500,
    offset: int = 0,
) -> list[MemberOut]:
    with ctx.db.read() as s:
        if s.get(Rollout, rollout_id) is None:
            raise NotFoundError(f"no rollout {rollout_id}")
        q = select(RolloutMember).where(RolloutMember.rollout_id == rollout_id)
        if wave is not None:
            q = q.where(RolloutMember.wave == wave)
        if status:
            q = q.where(RolloutMember.status == status)
        rows = s.scalars(
            q.order_by(RolloutMember.wave, RolloutMember.position).limit(limit).offset(offset)
        )
        return [MemberOut.model_validate(m) for m in rows]


def withdraw_release(s: Session, release_id: int) -> None:
    """Mark a release's artifacts withdrawn in the image repository (signed at commit)."""
    ids = select(ReleaseArtifact.artifact_id).where(ReleaseArtifact.release_id == release_id)
    s.execute(update(Artifact).where(Artifact.id.in_(ids)).values(withdrawn=True))
    paths = [
        image_path(a.id, a.name, a.version)
        for a in s.scalars(select(Artifact).where(Artifact.id.in_(ids)))
    ]
    s.info.setdefault("tuf_withdraw", []).extend(paths)
