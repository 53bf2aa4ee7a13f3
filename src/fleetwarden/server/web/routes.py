"""Dashboard pages. They call the same services as the REST API, with the operator's token
kept in an HttpOnly, SameSite=Strict cookie after login."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from fleetwarden.core.fleet import DeviceState
from fleetwarden.errors import AuthenticationError, NotFoundError, SelectorError
from fleetwarden.server.services import devices, tokens
from fleetwarden.server.web import rollout_pages
from fleetwarden.server.web.common import COOKIE, HERE, Ctx, LoginRequired, Who, templates

__all__ = ["mount_static", "router"]

router = APIRouter(prefix="/ui", include_in_schema=False)
router.include_router(rollout_pages.router)


def mount_static(app: FastAPI) -> None:
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, _exc: LoginRequired) -> Response:
        if request.headers.get("hx-request"):
            # Come back to the page the operator was looking at, not to the fragment that
            # htmx was fetching for it (the overview refresh, a device-list filter).
            url = urlsplit(request.headers.get("hx-current-url", ""))
            back = url.path + (f"?{url.query}" if url.query else "")
            login = f"/ui/login?next={quote(_local(back), safe='/')}"
            return Response(status_code=401, headers={"HX-Redirect": login})
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(back, safe='/')}", status_code=303)


def _local(target: str) -> str:
    """Where to go after login: a dashboard page, never off-site."""
    return target if target.startswith("/ui/") else "/ui/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/ui/") -> Response:  # noqa: A002
    return templates.TemplateResponse(request, "login.html", {"next": next, "error": None})


@router.post("/login")
def login(
    request: Request,
    ctx: Ctx,
    token: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/ui/",  # noqa: A002
) -> Response:
    try:
        with ctx.db.read() as s:
            tokens.authenticate(s, token.strip(), now=ctx.clock())
    except AuthenticationError as e:
        return templates.TemplateResponse(
            request, "login.html", {"next": next, "error": str(e)}, status_code=401
        )
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(
        COOKIE,
        token.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, ctx: Ctx, who: Who) -> Response:
    return templates.TemplateResponse(
        request, "overview.html", {"who": who, "summary": devices.summary(ctx), "page": "overview"}
    )


@router.get("/fragments/summary", response_class=HTMLResponse)
def summary_fragment(request: Request, ctx: Ctx, who: Who) -> Response:
    return templates.TemplateResponse(request, "_summary.html", {"summary": devices.summary(ctx)})


@router.get("/devices", response_class=HTMLResponse)
def device_list(
    request: Request,
    ctx: Ctx,
    who: Who,
    q: Annotated[str, Query(max_length=253)] = "",
    selector: Annotated[str, Query(max_length=4096)] = "",
    state: str = "",
) -> Response:
    error = None
    try:
        page = devices.list_devices(
            ctx,
            search=q or None,
            selector=selector or None,
            state=DeviceState(state) if state in DeviceState.__members__.values() else None,
            limit=500,
        )
    except SelectorError as e:
        page, error = None, str(e)
    context_ = {
        "who": who,
        "page_data": page,
        "q": q,
        "selector": selector,
        "state": state,
        "states": [s.value for s in DeviceState],
        "error": error,
        "page": "devices",
    }
    # htmx swaps only the rows in, but pushes the URL: when the browser comes back to that URL
    # (history restore, back button, reload) it must get the whole page, and its cache must
    # not hand a full-page navigation the fragment it stored for the same URL.
    fragment = bool(request.headers.get("hx-request")) and not request.headers.get(
        "hx-history-restore-request"
    )
    name = "_device_rows.html" if fragment else "devices.html"
    response = templates.TemplateResponse(request, name, context_)
    response.headers["Vary"] = "HX-Request, HX-History-Restore-Request"
    return response


@router.get("/devices/{device_id}", response_class=HTMLResponse)
def device_detail(request: Request, device_id: str, ctx: Ctx, who: Who) -> Response:
    try:
        detail = devices.get_device(ctx, device_id)
    except NotFoundError:
        return templates.TemplateResponse(
            request, "not_found.html", {"who": who, "what": f"device {device_id}"}, status_code=404
        )
    return templates.TemplateResponse(
        request, "device.html", {"who": who, "d": detail, "page": "devices"}
    )
