"""Deployments: assign a release to chosen devices, one assignment per device."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetwarden.core import assignments as lifecycle
from fleetwarden.core.deploy import Candidate, plan_deployment
from fleetwarden.errors import InputError, NotFoundError
from fleetwarden.protocol.api import AssignmentOut, DeploymentCreate, DeploymentOut
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import (
    Artifact,
    Assignment,
    AssignmentEvent,
    Deployment,
    Device,
    Release,
    ReleaseArtifact,
)
from fleetwarden.server.services import audit, deltas
from fleetwarden.server.services.devices import assignment_out, select_devices
from fleetwarden.server.services.members import on_assignment_change

__all__ = [
    "cancel_assignment",
    "cancel_in_session",
    "create_assignment",
    "deploy",
    "list_assignments",
    "list_deployments",
]


def deploy(ctx: ServerContext, body: DeploymentCreate, *, actor: str) -> DeploymentOut:
    """Create a deployment and its assignments in one transaction.

    Raises:
        InputError: neither selector nor devices given; SelectorError for a bad selector.
        NotFoundError: unknown release.
    """
    if not body.selector and not body.devices:
        raise InputError("give a selector, a list of devices, or both")
    now = ctx.clock()
    with ctx.db.write() as s:
        release = s.get(Release, body.release_id)
        if release is None:
            raise NotFoundError(f"no release {body.release_id}")
        label = f"{release.name}@{release.version}"
        models = frozenset(
            m
            for (cm,) in s.execute(
                select(Artifact.compatible_models)
                .join(ReleaseArtifact, ReleaseArtifact.artifact_id == Artifact.id)
                .where(ReleaseArtifact.release_id == release.id)
            )
            for m in cm
        )
        chosen: list[Device] = []
        unknown: dict[str, str] = {}
        if body.selector:
            chosen.extend(select_devices(s, body.selector))
        if body.devices:
            rows = {d.id: d for d in s.scalars(select(Device).where(Device.id.in_(body.devices)))}
            for did in body.devices:
                if did in rows:
                    chosen.append(rows[did])
                else:
                    unknown[did] = "no such device"
        active = {
            a.device_id: a
            for a in s.scalars(
                select(Assignment).where(
                    Assignment.device_id.in_([d.id for d in chosen]),
                    Assignment.state.in_([x.value for x in lifecycle.ACTIVE_STATES]),
                )
            )
        }
        plan = plan_deployment(
            [
                Candidate(
                    device_id=d.id,
                    revoked=d.status != "active",
                    hardware_model=d.hardware_model,
                    installed_release=d.installed_release,
                    active_assignment_id=active[d.id].id if d.id in active else None,
                    active_assignment_state=(
                        lifecycle.AssignmentState(active[d.id].state) if d.id in active else None
                    ),
                )
                for d in chosen
            ],
            release=label,
            compatible_models=models,
            force=body.force,
        )
        dep = Deployment(
            release_id=release.id, selector=body.selector, created_at=now, created_by=actor
        )
        s.add(dep)
        s.flush()
        for aid in plan.cancel:
            cancel_in_session(
                s, aid, actor=actor, now=now, reason=f"replaced by deployment {dep.id}"
            )
        devices = {d.id: d for d in chosen}
        for did in plan.assign:
            create_assignment(s, devices[did], release.id, now=now, deployment_id=dep.id)
        skipped = unknown | plan.skipped
        audit.record(
            s,
            at=now,
            actor=actor,
            action="deployment.create",
            target_type="deployment",
            target_id=dep.id,
            after={
                "release": label,
                "selector": body.selector,
                "devices": list(plan.assign),
                "cancelled": list(plan.cancel),
                "skipped": skipped,
            },
        )
        return DeploymentOut(
            id=dep.id,
            release_id=release.id,
            release=label,
            selector=body.selector,
            created_at=now,
            created_by=actor,
            assigned=len(plan.assign),
            skipped=skipped,
        )


def create_assignment(
    s: Session,
    device: Device,
    release_id: int,
    *,
    now: datetime,
    deployment_id: int | None = None,
    rollout_id: int | None = None,
    detail: str = "assigned",
) -> Assignment:
    """Insert a pending assignment and point the device (and its poll ETag) at it.

    Raises:
        sqlalchemy.exc.IntegrityError: the device already has an unfinished assignment (the
            partial unique index); callers that may race use a savepoint.
    """
    a = Assignment(
        device_id=device.id,
        deployment_id=deployment_id,
        rollout_id=rollout_id,
        release_id=release_id,
        from_release=device.installed_release,
        hardware_model=device.hardware_model,
        state=lifecycle.AssignmentState.PENDING.value,
        detail="",
        created_at=now,
        updated_at=now,
        delta_artifact_id=deltas.choose_delta(s, device, release_id),
    )
    s.add(a)
    s.flush()
    s.add(AssignmentEvent(assignment_id=a.id, at=now, state=a.state, detail=detail))
    s.info["tuf_director_changed"] = True  # signed before this transaction commits
    device.latest_assignment_id, device.latest_assignment_state = a.id, a.state
    device.rev += 1
    return a


def cancel_in_session(
    s: Session, assignment_id: int, *, actor: str, now: datetime, reason: str
) -> Assignment:
    """Cancel an assignment inside the caller's transaction (core.assignments rule 6)."""
    a = s.get(Assignment, assignment_id, with_for_update=True)
    if a is None:
        raise NotFoundError(f"no assignment {assignment_id}")
    t = lifecycle.cancel(lifecycle.AssignmentState(a.state))
    if t.changed:
        before = a.state
        a.state, a.detail, a.updated_at, a.finished_at = t.after.value, reason, now, now
        s.add(AssignmentEvent(assignment_id=a.id, at=now, state=a.state, detail=reason))
        s.info["tuf_director_changed"] = True
        d = s.get(Device, a.device_id, with_for_update=True)
        if d is not None:
            d.rev += 1
            if d.latest_assignment_id == a.id:
                d.latest_assignment_state = a.state
        on_assignment_change(s, a, now=now)
        audit.record(
            s,
            at=now,
            actor=actor,
            action="assignment.cancel",
            target_type="assignment",
            target_id=a.id,
            before={"state": before},
            after={"state": a.state, "reason": reason},
        )
    return a


def cancel_assignment(ctx: ServerContext, assignment_id: int, *, actor: str) -> AssignmentOut:
    """Raises ``IllegalTransition`` once installation has begun (core.assignments rule 6)."""
    now = ctx.clock()
    with ctx.db.write() as s:
        a = cancel_in_session(
            s, assignment_id, actor=actor, now=now, reason=f"cancelled by {actor}"
        )
        release = s.get(Release, a.release_id)
        if release is None:  # foreign key: only a corrupt database gets here
            raise NotFoundError("release vanished")
        return assignment_out(a, release)


def list_assignments(
    ctx: ServerContext,
    *,
    device_id: str | None = None,
    deployment_id: int | None = None,
    state: lifecycle.AssignmentState | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[AssignmentOut]:
    with ctx.db.read() as s:
        q = (
            select(Assignment, Release)
            .join(Release, Release.id == Assignment.release_id)
            .order_by(Assignment.id.desc())
        )
        if device_id:
            q = q.where(Assignment.device_id == device_id)
        if deployment_id:
            q = q.where(Assignment.deployment_id == deployment_id)
        if state:
            q = q.where(Assignment.state == state.value)
        return [assignment_out(a, r) for a, r in s.execute(q.limit(limit).offset(offset))]


def list_deployments(ctx: ServerContext) -> list[DeploymentOut]:
    with ctx.db.read() as s:
        rows = s.execute(
            select(Deployment, Release)
            .join(Release, Release.id == Deployment.release_id)
            .order_by(Deployment.id.desc())
        ).all()
        counts: dict[int, int] = {}
        for (dep_id,) in s.execute(select(Assignment.deployment_id)):
            if dep_id is not None:
                counts[dep_id] = counts.get(dep_id, 0) + 1
        return [
            DeploymentOut(
                id=d.id,
                release_id=r.id,
                release=f"{r.name}@{r.version}",
                selector=d.selector,
                created_at=d.created_at,
                created_by=d.created_by,
                assigned=counts.get(d.id, 0),
            )
            for d, r in rows
        ]
