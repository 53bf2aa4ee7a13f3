"""Request dependencies: the server context, operator principals and role checks."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request

from fleetwarden.errors import AuthenticationError, PermissionDenied
from fleetwarden.protocol.api import Role
from fleetwarden.server.context import ServerContext
from fleetwarden.server.services import tokens
from fleetwarden.server.services.tokens import Principal

__all__ = ["bearer", "context", "principal", "require"]


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def principal(request: Request) -> Principal:
    """The operator behind an ``Authorization: Bearer`` API token."""
    token = bearer(request)
    if token is None:
        raise AuthenticationError("an API token is required (Authorization: Bearer fwt_...)")
    ctx = context(request)
    with ctx.db.read() as s:
        return tokens.authenticate(s, token, now=ctx.clock())


def require(role: Role) -> Callable[[Principal], Principal]:
    def check(p: Principal = Depends(principal)) -> Principal:
        if not p.allows(role):
            raise PermissionDenied(
                f"this needs the {role.value} role; the token has {p.role.value}"
            )
        return p

    return check
