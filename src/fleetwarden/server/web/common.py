"""What every dashboard page shares: the templates, the login cookie and who is looking."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

import fleetwarden
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
