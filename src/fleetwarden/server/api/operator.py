"""Operator REST API v1 (``/api/v1``). Every endpoint needs an API token of a given role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from fleetwarden.core.assignments import AssignmentState
from fleetwarden.core.fleet import DeviceState
from fleetwarden.errors import InputError
from fleetwarden.protocol.api import (
    ArtifactOut,
    ArtifactType,
    AssignmentOut,
    AuditOut,
    DeltaCreate,
    DeploymentCreate,
    DeploymentOut,
    DeviceDetail,
    DeviceOut,
    EnrollmentTokenCreate,
    EnrollmentTokenCreated,
    ErrorBody,
    FleetSummary,
    InventoryOut,
    LabelsPatch,
    Page,
    ReleaseCreate,
    ReleaseOut,
    Role,
    TokenCreate,
    TokenCreated,
    TokenOut,
)
from fleetwarden.server.api.deps import context, require
from fleetwarden.server.context import ServerContext
from fleetwarden.server.services import artifacts, audit, deltas, deployments, devices, tokens
from fleetwarden.server.services.tokens import Principal

__all__ = ["router"]

_ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 413, 422)}
router = APIRouter(prefix="/api/v1", responses=_ERRORS)  # type: ignore[arg-type]

Ctx = Annotated[ServerContext, Depends(context)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


# -- tokens ------------------------------------------------------------------------------------
@router.post("/tokens", status_code=201, tags=["tokens"])
def create_token(body: TokenCreate, ctx: Ctx, who: Admin) -> TokenCreated:
    """Create an API token. The token value is shown in this answer only."""
    with ctx.db.write() as s:
        return tokens.create_token(s, body, actor=who.actor, now=ctx.clock())


@router.get("/tokens", tags=["tokens"])
def list_tokens(ctx: Ctx, who: Admin) -> list[TokenOut]:
    with ctx.db.read() as s:
        return tokens.list_tokens(s)


@router.post("/tokens/{token_id}/revoke", tags=["tokens"])
def revoke_token(token_id: int, ctx: Ctx, who: Admin) -> TokenOut:
    with ctx.db.write() as s:
        return tokens.revoke_token(s, token_id, actor=who.actor, now=ctx.clock())


@router.post("/enrollment-tokens", status_code=201, tags=["tokens"])
def create_enrollment_token(
    body: EnrollmentTokenCreate, ctx: Ctx, who: Operator
) -> EnrollmentTokenCreated:
    """A token devices present once (or ``uses`` times) to enroll; labels go to those devices."""
    with ctx.db.write() as s:
        return tokens.create_enrollment_token(s, body, actor=who.actor, now=ctx.clock())


# -- devices -----------------------------------------------------------------------------------
@router.get("/devices", tags=["devices"])
def list_devices(
    ctx: Ctx,
    who: Viewer,
    selector: Annotated[str | None, Query(max_length=4096)] = None,
    q: Annotated[str | None, Query(max_length=253, description="substring of name or id")] = None,
    state: DeviceState | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DeviceOut]:
    return devices.list_devices(
        ctx, selector=selector, search=q, state=state, limit=limit, offset=offset
    )


@router.get("/devices/{device_id}", tags=["devices"])
def get_device(device_id: str, ctx: Ctx, who: Viewer) -> DeviceDetail:
    return devices.get_device(ctx, device_id)


@router.get("/devices/{device_id}/inventory", tags=["devices"])
def inventory_history(
    device_id: str, ctx: Ctx, who: Viewer, limit: Limit = 20
) -> list[InventoryOut]:
    return devices.inventory_history(ctx, device_id, limit=limit)


@router.patch("/devices/{device_id}/labels", tags=["devices"])
def patch_labels(device_id: str, body: LabelsPatch, ctx: Ctx, who: Operator) -> DeviceOut:
    return devices.patch_labels(ctx, device_id, body, actor=who.actor)


@router.post("/devices/{device_id}/revoke", tags=["devices"])
def revoke_device(device_id: str, ctx: Ctx, who: Admin) -> DeviceOut:
    """Revoke the device and its certificate; refused on its next request, on every replica."""
    return devices.revoke_device(ctx, device_id, actor=who.actor)


@router.get("/fleet/summary", tags=["devices"])
def fleet_summary(ctx: Ctx, who: Viewer) -> FleetSummary:
    return devices.summary(ctx)


# -- artifacts and releases --------------------------------------------------------------------
def _meta(pairs: list[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"meta must be key=value, got {pair!r}")
        meta[key] = value
    return meta


@router.post(
    "/artifacts",
    status_code=201,
    tags=["artifacts"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_artifact(
    request: Request,
    ctx: Ctx,
    who: Operator,
    name: Annotated[str, Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.+\-]+$")],
    version: Annotated[str, Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.+~:\-]+$")],
    type: ArtifactType,  # noqa: A002 - the API field is called type
    compatible_model: Annotated[list[str], Query(max_length=64)] = [],  # noqa: B006 - FastAPI copies it
    meta: Annotated[list[str], Query(max_length=64)] = [],  # noqa: B006
) -> ArtifactOut:
    """Upload the raw bytes as the request body (streamed; never held whole in memory).

    Send ``X-Content-SHA256`` to have the server refuse corrupted uploads.
    """
    length = request.headers.get("content-length")
    return await artifacts.upload(
        ctx,
        request.stream(),
        name=name,
        version=version,
        kind=type,
        compatible_models=compatible_model,
        meta=_meta(meta),
        expected_sha256=request.headers.get("x-content-sha256"),
        expected_size=int(length) if length and length.isdigit() else None,
        actor=who.actor,
    )


@router.get("/artifacts", tags=["artifacts"])
def list_artifacts(ctx: Ctx, who: Viewer, name: str | None = None) -> list[ArtifactOut]:
    return artifacts.list_artifacts(ctx, name=name)


@router.get("/artifacts/{artifact_id}", tags=["artifacts"])
def get_artifact(artifact_id: int, ctx: Ctx, who: Viewer) -> ArtifactOut:
    return artifacts.get_artifact(ctx, artifact_id)


@router.post("/artifacts/{artifact_id}/deltas", status_code=201, tags=["artifacts"])
async def create_delta(artifact_id: int, body: DeltaCreate, ctx: Ctx, who: Operator) -> ArtifactOut:
    """Build a zstd delta from image ``base_id`` to this image; devices running the base are
    sent it instead of the full image (refused, 400, if it would save less than half)."""
    return await deltas.create_delta(ctx, artifact_id, body.base_id, actor=who.actor)


@router.post("/releases", status_code=201, tags=["releases"])
def create_release(body: ReleaseCreate, ctx: Ctx, who: Operator) -> ReleaseOut:
    return artifacts.create_release(ctx, body, actor=who.actor)


@router.get("/releases", tags=["releases"])
def list_releases(ctx: Ctx, who: Viewer) -> list[ReleaseOut]:
    return artifacts.list_releases(ctx)


@router.get("/releases/{ref}", tags=["releases"])
def get_release(ref: str, ctx: Ctx, who: Viewer) -> ReleaseOut:
    """``ref`` is a numeric id or ``name@version``."""
    return artifacts.get_release(ctx, ref)


# -- deployments and assignments ---------------------------------------------------------------
@router.post("/deployments", status_code=201, tags=["deployments"])
def create_deployment(body: DeploymentCreate, ctx: Ctx, who: Operator) -> DeploymentOut:
    return deployments.deploy(ctx, body, actor=who.actor)


@router.get("/deployments", tags=["deployments"])
def list_deployments(ctx: Ctx, who: Viewer) -> list[DeploymentOut]:
    return deployments.list_deployments(ctx)


@router.get("/assignments", tags=["deployments"])
def list_assignments(
    ctx: Ctx,
    who: Viewer,
    device: str | None = None,
    deployment: int | None = None,
    state: AssignmentState | None = None,
    limit: Limit = 200,
    offset: Offset = 0,
) -> list[AssignmentOut]:
    return deployments.list_assignments(
        ctx, device_id=device, deployment_id=deployment, state=state, limit=limit, offset=offset
    )


@router.post("/assignments/{assignment_id}/cancel", tags=["deployments"])
def cancel_assignment(assignment_id: int, ctx: Ctx, who: Operator) -> AssignmentOut:
    return deployments.cancel_assignment(ctx, assignment_id, actor=who.actor)


# -- audit -------------------------------------------------------------------------------------
@router.get("/audit", tags=["audit"])
def list_audit(
    ctx: Ctx,
    who: Viewer,
    target_type: str | None = None,
    target_id: str | None = None,
    action: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[AuditOut]:
    with ctx.db.read() as s:
        return audit.list_records(
            s,
            target_type=target_type,
            target_id=target_id,
            action=action,
            limit=limit,
            offset=offset,
        )
