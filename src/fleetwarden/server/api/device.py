"""Native device API v1 (``/device/v1``): enrollment, sessions, poll, status, inventory, artifacts.

Authentication is proof of possession (ADR 0001): enrollment with a token and a CSR; then a
signed challenge opens a short-lived session; every other call carries the session token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from fleetwarden.errors import FleetwardenError
from fleetwarden.protocol.api import ErrorBody
from fleetwarden.protocol.device import (
    ChallengeResponse,
    EnrollRequest,
    EnrollResponse,
    Inventory,
    InventoryAck,
    PollResponse,
    ReenrollRequest,
    ReenrollResponse,
    SessionRequest,
    SessionResponse,
    StatusAck,
    StatusReport,
)
from fleetwarden.server.api.blob import blob_response
from fleetwarden.server.api.deps import bearer, context
from fleetwarden.server.context import ServerContext
from fleetwarden.server.services import certificates, device_api, enrollment
from fleetwarden.server.services.device_api import DeviceSession

__all__ = ["router"]

router = APIRouter(
    prefix="/device/v1",
    tags=["device"],
    responses={s: {"model": ErrorBody} for s in (400, 401, 404, 409, 416, 422)},
)
Ctx = Annotated[ServerContext, Depends(context)]


def device(request: Request) -> DeviceSession:
    ctx = context(request)
    return device_api.authenticate(ctx, bearer(request), now=ctx.clock())


Dev = Annotated[DeviceSession, Depends(device)]


# The hot path (DESIGN §4; bench/checkin.py measures it). Registered first, so the router
# tries it first. It takes no dependencies and is declared ``async``: FastAPI runs every sync
# dependency and endpoint in the thread pool, and two thread hand-offs per poll cost more than
# the poll itself. On SQLite the one indexed read of a local file takes microseconds and runs
# right here on the event loop; on PostgreSQL, where a read waits on the network, the work
# goes to the thread pool.
@router.get(
    "/poll", responses={200: {"model": PollResponse}, 304: {"description": "nothing changed"}}
)
async def poll(request: Request) -> Response:
    """What the device should do next. Send ``If-None-Match`` with the last ``ETag``."""
    ctx = context(request)
    if ctx.db.is_sqlite:
        return _poll(ctx, request)
    return await run_in_threadpool(_poll, ctx, request)


def _poll(ctx: ServerContext, request: Request) -> Response:
    dev = device_api.authenticate(ctx, bearer(request), now=ctx.clock())
    etag = device_api.etag_for(ctx, dev)
    if request.headers.get("if-none-match") == etag:
        ctx.metrics.count_poll("304")
        return Response(status_code=304, headers={"ETag": etag})
    body = device_api.poll(ctx, dev)
    ctx.metrics.count_poll("200")
    return Response(
        body.model_dump_json(),
        media_type="application/json",
        headers={"ETag": etag, "Cache-Control": "no-cache"},
    )


@router.post("/enroll", status_code=201)
def enroll(body: EnrollRequest, ctx: Ctx) -> EnrollResponse:
    try:
        answer = enrollment.enroll(ctx, body)
    except FleetwardenError:
        ctx.metrics.enrollments.labels("refused").inc()
        raise
    ctx.metrics.enrollments.labels("enrolled").inc()
    return answer


@router.post("/session/challenge")
def session_challenge(ctx: Ctx) -> ChallengeResponse:
    return enrollment.challenge(ctx)


@router.post("/session")
def open_session(body: SessionRequest, ctx: Ctx) -> SessionResponse:
    return enrollment.open_session(ctx, body)


@router.post("/reenroll")
def reenroll(body: ReenrollRequest, ctx: Ctx, dev: Dev) -> ReenrollResponse:
    """Renew the device certificate (EST ``simplereenroll`` semantics, RFC 7030 §4.2.2).

    Needs a session opened with the device's current certificate. The new certificate
    becomes current when the device first opens a session with it."""
    return certificates.reenroll(ctx, dev, body)


@router.post("/assignments/{assignment_id}/status")
def report_status(assignment_id: int, body: StatusReport, ctx: Ctx, dev: Dev) -> StatusAck:
    """409 means: stop working on this assignment (it was cancelled or already ended)."""
    return device_api.report_status(ctx, dev, assignment_id, body)


@router.put("/inventory")
def put_inventory(body: Inventory, ctx: Ctx, dev: Dev) -> InventoryAck:
    return device_api.store_inventory(ctx, dev, body)


@router.get("/artifacts/{sha256}", response_class=Response)
def download(
    request: Request,
    sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
    ctx: Ctx,
    dev: Dev,
) -> Response:
    """Artifact bytes; honours a single ``Range`` so interrupted downloads resume."""
    device_api.authorize_artifact(ctx, dev, sha256)
    return blob_response(ctx, request, sha256)
