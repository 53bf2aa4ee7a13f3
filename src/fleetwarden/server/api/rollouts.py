"""Rollouts and maintenance windows (``/api/v1/rollouts``, ``/api/v1/windows``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from fleetwarden.core.rollout.lifecycle import Verb
from fleetwarden.protocol.api import ErrorBody, Role
from fleetwarden.protocol.rollouts import (
    AbortBody,
    MemberOut,
    ReasonBody,
    RolloutCreate,
    RolloutOut,
    StartBody,
    WindowCreate,
    WindowOut,
)
from fleetwarden.server.api.deps import context, require
from fleetwarden.server.context import ServerContext
from fleetwarden.server.services import rollouts, windows
from fleetwarden.server.services.tokens import Principal

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1",
    responses={s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 422)},
)
Ctx = Annotated[ServerContext, Depends(context)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Approver = Annotated[Principal, Depends(require(Role.APPROVER))]


@router.post("/rollouts", status_code=201, tags=["rollouts"])
def create_rollout(body: RolloutCreate, ctx: Ctx, who: Operator) -> RolloutOut:
    """Plan a rollout: targets by selector, ordered by criticality and risk, cut into waves.
    It waits for approval by another person unless its strategy says otherwise."""
    return rollouts.create(ctx, body, actor=who.actor)


@router.get("/rollouts", tags=["rollouts"])
def list_rollouts(ctx: Ctx, who: Viewer) -> list[RolloutOut]:
    return rollouts.list_rollouts(ctx)


@router.get("/rollouts/{rollout_id}", tags=["rollouts"])
def get_rollout(rollout_id: int, ctx: Ctx, who: Viewer) -> RolloutOut:
    return rollouts.get(ctx, rollout_id)


@router.get("/rollouts/{rollout_id}/members", tags=["rollouts"])
def list_members(
    rollout_id: int,
    ctx: Ctx,
    who: Viewer,
    wave: int | None = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[MemberOut]:
    return rollouts.list_members(
        ctx, rollout_id, wave=wave, status=status, limit=limit, offset=offset
    )


@router.post("/rollouts/{rollout_id}/approve", tags=["rollouts"])
def approve(rollout_id: int, ctx: Ctx, who: Approver, body: ReasonBody | None = None) -> RolloutOut:
    """Four eyes: the approver must not be the creator (unless the strategy allows it)."""
    return rollouts.act(
        ctx, rollout_id, Verb.APPROVE, who=who, reason=(body or ReasonBody()).reason
    )


@router.post("/rollouts/{rollout_id}/deny", tags=["rollouts"])
def deny(rollout_id: int, ctx: Ctx, who: Approver, body: ReasonBody | None = None) -> RolloutOut:
    return rollouts.act(ctx, rollout_id, Verb.DENY, who=who, reason=(body or ReasonBody()).reason)


@router.post("/rollouts/{rollout_id}/start", tags=["rollouts"])
def start(rollout_id: int, ctx: Ctx, who: Operator, body: StartBody | None = None) -> RolloutOut:
    """``emergency: true`` (admin only) ignores maintenance windows and soak times, never gates."""
    b = body or StartBody()
    return rollouts.act(
        ctx, rollout_id, Verb.START, who=who, reason=b.reason, emergency=b.emergency
    )


@router.post("/rollouts/{rollout_id}/pause", tags=["rollouts"])
def pause(rollout_id: int, ctx: Ctx, who: Operator, body: ReasonBody | None = None) -> RolloutOut:
    return rollouts.act(ctx, rollout_id, Verb.PAUSE, who=who, reason=(body or ReasonBody()).reason)


@router.post("/rollouts/{rollout_id}/resume", tags=["rollouts"])
def resume(rollout_id: int, ctx: Ctx, who: Operator, body: ReasonBody | None = None) -> RolloutOut:
    return rollouts.act(ctx, rollout_id, Verb.RESUME, who=who, reason=(body or ReasonBody()).reason)


@router.post("/rollouts/{rollout_id}/abort", tags=["rollouts"])
def abort(rollout_id: int, ctx: Ctx, who: Operator, body: AbortBody | None = None) -> RolloutOut:
    """``rollback: true`` also sends every device that succeeded its previous release."""
    b = body or AbortBody()
    verb = Verb.ABORT_AND_ROLLBACK if b.rollback else Verb.ABORT
    return rollouts.act(ctx, rollout_id, verb, who=who, reason=b.reason)


@router.post("/rollouts/{rollout_id}/retry-failed", tags=["rollouts"])
def retry_failed(
    rollout_id: int, ctx: Ctx, who: Operator, body: ReasonBody | None = None
) -> RolloutOut:
    return rollouts.act(
        ctx, rollout_id, Verb.RETRY_FAILED, who=who, reason=(body or ReasonBody()).reason
    )


@router.post("/rollouts/{rollout_id}/advance", tags=["rollouts"])
def advance(rollout_id: int, ctx: Ctx, who: Operator, body: ReasonBody | None = None) -> RolloutOut:
    """Start the next wave now (manual advance)."""
    return rollouts.act(
        ctx, rollout_id, Verb.ADVANCE, who=who, reason=(body or ReasonBody()).reason
    )


@router.post("/windows", status_code=201, tags=["windows"])
def create_window(body: WindowCreate, ctx: Ctx, who: Operator) -> WindowOut:
    """A maintenance window (cron, duration, IANA zone) for the devices a selector matches."""
    return windows.create_window(ctx, body, actor=who.actor)


@router.get("/windows", tags=["windows"])
def list_windows(ctx: Ctx, who: Viewer) -> list[WindowOut]:
    return windows.list_windows(ctx)


@router.delete("/windows/{window_id}", status_code=204, tags=["windows"])
def delete_window(window_id: int, ctx: Ctx, who: Operator) -> Response:
    windows.delete_window(ctx, window_id, actor=who.actor)
    return Response(status_code=204)
