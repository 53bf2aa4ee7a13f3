"""What every dashboard page shares: the templates, the login cookie and who is looking."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

import fleetwarden
from fleetwarden.core.certificates import expiry_state
from fleetwarden.errors import AuthenticationError
from fleetwarden.server.api.deps import context
from fleetwarden.server.context import ServerContext
from fleetwarden.server.services import tokens
from fleetwarden.server.services.tokens import Principal

__all__ = ["COOKIE", "HERE", "Ctx", "LoginRequired", "Who", "templates", "viewer"]

HERE = Path(__file__).parent
COOKIE = "fw_token"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["version"] = fleetwarden.__version__
# Times are stored and shown in UTC, and say so: fleets span time zones.
templates.env.filters["ts"] = lambda dt: dt.strftime("%Y-%m-%d %H:%M:%S UTC")


@jinja2.pass_context
def _cert_expiry(context: Any, not_after: datetime | None) -> str:
    """``expired``, ``expiring_7d`` or ``valid`` (core.certificates) at the server's clock;
    templates style the certificate date with it."""
    if not_after is None:
        return ""
    now = context["request"].app.state.ctx.clock()
    return expiry_state(not_after, now=now).value


templates.env.globals["cert_expiry"] = _cert_expiry

Ctx = Annotated[ServerContext, Depends(context)]


class LoginRequired(Exception):
    """Raised by ``viewer``; the app answers with the login page (see ``mount_static``)."""


def viewer(request: Request) -> Principal:
    token = request.cookies.get(COOKIE)
    if not token:
        raise LoginRequired
    ctx = context(request)
    try:
        with ctx.db.read() as s:
            return tokens.authenticate(s, token, now=ctx.clock())
    except AuthenticationError:
        raise LoginRequired from None


Who = Annotated[Principal, Depends(viewer)]
