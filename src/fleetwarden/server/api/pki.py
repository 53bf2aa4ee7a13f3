"""The device PKI in public (``/pki``: CA bundle and CRLs) and for admins (``/api/v1/ca``).

``/pki/…`` needs no authentication: CA certificates and CRLs are public by design (RFC 5280
§5), and third parties (a TLS-terminating proxy, a SIEM) fetch them to check device
certificates themselves.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from fleetwarden.protocol.api import CaStatus, ErrorBody, Role
from fleetwarden.server.api.deps import context, require
from fleetwarden.server.context import ServerContext
from fleetwarden.server.services import certificates
from fleetwarden.server.services.tokens import Principal

__all__ = ["router"]

router = APIRouter()
Ctx = Annotated[ServerContext, Depends(context)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
_NO_STORE = {"Cache-Control": "no-cache"}
_ERRORS = {s: {"model": ErrorBody} for s in (401, 403)}


@router.get("/pki/ca.pem", tags=["pki"], response_class=Response)
def ca_pem(ctx: Ctx) -> Response:
    """Every CA trusted for device certificates, the issuing CA first."""
    body = ctx.ca.bundle_pem(now=ctx.clock())
    return Response(body, media_type="application/x-pem-file", headers=_NO_STORE)


@router.get("/pki/crl.pem", tags=["pki"], response_class=Response)
def crl_pem(ctx: Ctx) -> Response:
    """The CRL of every trusted device CA (issuing CA first): revoked and superseded
    certificates that have not expired yet."""
    return Response(
        certificates.crl_pem(ctx), media_type="application/x-pem-file", headers=_NO_STORE
    )


@router.get("/pki/crl.der", tags=["pki"], response_class=Response)
def crl_der(ctx: Ctx) -> Response:
    """The issuing CA's CRL, DER (RFC 5280)."""
    return Response(certificates.crl_der(ctx), media_type="application/pkix-crl", headers=_NO_STORE)


@router.get("/api/v1/ca", tags=["ca"], responses=_ERRORS)  # type: ignore[arg-type]
def ca_status(ctx: Ctx, who: Viewer) -> CaStatus:
    return certificates.ca_status(ctx)


@router.post("/api/v1/ca/rotate", tags=["ca"], responses=_ERRORS)  # type: ignore[arg-type]
def ca_rotate(ctx: Ctx, who: Admin) -> CaStatus:
    """Make a new CA the issuing CA; the previous one stays trusted until the last certificate
    it issued expires. Devices move to the new CA when they renew."""
    return certificates.rotate_ca(ctx, actor=who.actor)
