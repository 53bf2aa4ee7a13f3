"""Serving artifact bytes from the blob store, with a single ``Range`` (resumable downloads)."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from fleetwarden.core.http_range import parse_range
from fleetwarden.server.context import ServerContext

__all__ = ["blob_response"]


def blob_response(ctx: ServerContext, request: Request, sha256: str) -> Response:
    """The blob ``sha256`` (which the caller has authorised), whole or one range."""
    path = ctx.store.local_path(sha256)
    headers = {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}
    if path is not None:
        # Starlette serves files with Range support and sendfile.
        return FileResponse(path, media_type="application/octet-stream", headers=headers)
    size = ctx.store.size(sha256)
    span = parse_range(request.headers.get("range"), size)
    if span is None:
        return StreamingResponse(
            ctx.store.iter_range(sha256, 0, size),
            media_type="application/octet-stream",
            headers=headers | {"Content-Length": str(size)},
        )
    start, stop = span
    return StreamingResponse(
        ctx.store.iter_range(sha256, start, stop),
        status_code=206,
        media_type="application/octet-stream",
        headers=headers
        | {
            "Content-Length": str(stop - start),
            "Content-Range": f"bytes {start}-{stop - 1}/{size}",
        },
    )
