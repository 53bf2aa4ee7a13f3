"""The TUF repositories over HTTP, as static files any TUF client reads.

- ``/tuf/metadata/<version>.<role>.json``, ``/tuf/metadata/timestamp.json``: the image
  repository (every released artifact); ``/tuf/metadata/root.json`` is the newest root, for
  bootstrapping a client out of band.
- ``/tuf/targets/artifacts/<id>/<sha256>.<name>-<version>``: artifact bytes under their
  consistent-snapshot names (Range supported).
- ``/tuf/director/metadata/...``: the director repository (what each device should install).
- ``/api/v1/tuf/status``: the version and expiry of every top-level role (viewer).

Metadata is public: it is signed, and carries hashes, not secrets. Timestamps must not be
cached by proxies; versioned files never change and may be cached for ever.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from fleetwarden.errors import NotFoundError
from fleetwarden.protocol.api import Role
from fleetwarden.server.api.blob import blob_response
from fleetwarden.server.api.deps import context, require
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import Artifact

__all__ = ["router"]

router = APIRouter(tags=["tuf"])
Ctx = Annotated[ServerContext, Depends(context)]
_TARGET = re.compile(r"^artifacts/(\d{1,12})/([0-9a-f]{64})\.[^/]+$")


def _metadata(ctx: ServerContext, repo: str, filename: str) -> Response:
    with ctx.db.read() as s:
        data = ctx.tuf.repo(repo).file(s, filename)
    volatile = filename in ("timestamp.json", "root.json")
    return Response(
        data,
        media_type="application/json",
        headers={"Cache-Control": "no-cache" if volatile else "public, max-age=31536000"},
    )


@router.get("/tuf/metadata/{filename}", include_in_schema=False)
async def image_metadata(filename: str, request: Request) -> Response:
    return await run_in_threadpool(_metadata, context(request), "image", filename)


@router.get("/tuf/director/metadata/{filename}", include_in_schema=False)
async def director_metadata(filename: str, request: Request) -> Response:
    return await run_in_threadpool(_metadata, context(request), "director", filename)


@router.get("/tuf/targets/{path:path}", include_in_schema=False)
def image_target(path: str, request: Request, ctx: Ctx) -> Response:
    m = _TARGET.match(path)
    if m is None:
        raise NotFoundError(f"no TUF target {path!r}")
    artifact_id, sha256 = int(m.group(1)), m.group(2)
    with ctx.db.read() as s:
        art = s.get(Artifact, artifact_id)
    if art is None or art.sha256 != sha256:
        raise NotFoundError(f"no TUF target {path!r}")
    return blob_response(ctx, request, sha256)


@router.get("/api/v1/tuf/status", dependencies=[Depends(require(Role.VIEWER))])
def status(ctx: Ctx) -> list[dict[str, object]]:
    """Version and expiry of root, targets, snapshot and timestamp of both repositories."""
    return [
        {"repo": r.repo, "role": r.role, "version": r.version, "expires": r.expires.isoformat()}
        for r in ctx.tuf.status()
    ]
