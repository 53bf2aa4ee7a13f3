"""One place that turns our exceptions into HTTP answers: ``{"error": {code, message}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleetwarden import errors as e

__all__ = ["install_error_handlers", "status_for"]

log = logging.getLogger("fleetwarden.api")

_STATUS: list[tuple[type[e.FleetwardenError], int]] = [
    (e.RangeNotSatisfiable, 416),
    (e.PayloadTooLarge, 413),
    (e.InputError, 400),
    (e.VerificationError, 422),
    (e.AuthenticationError, 401),
    (e.PermissionDenied, 403),
    (e.NotFoundError, 404),
    (e.ConflictError, 409),
    (e.ServerError, 502),
    (e.TransportError, 502),
]


def status_for(exc: e.FleetwardenError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def _body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.FleetwardenError)
    async def _ours(request: Request, exc: e.FleetwardenError) -> JSONResponse:
        status = status_for(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, e.RangeNotSatisfiable):
            headers = {"Content-Range": f"bytes */{exc.size}"}
        if isinstance(exc, e.Deferred):
            headers = {"Retry-After": str(int(exc.retry_after))}
        if status >= 500:
            log.error("request failed: %s", exc, extra={"path": request.url.path})
        return JSONResponse(_body(exc.code, str(exc)), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return JSONResponse(
                _body("malformed_json", "request body is not valid JSON"), status_code=400
            )
        text = "; ".join(
            f"{'.'.join(str(x) for x in p.get('loc', ()) if x != 'body') or 'body'}: {p.get('msg')}"
            for p in problems[:10]
        )
        return JSONResponse(_body("invalid_input", text), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            _body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )
