"""Artifacts (content-addressed blobs with metadata) and releases (ordered sets of them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from fleetwarden.errors import ConflictError, InputError, NotFoundError
from fleetwarden.protocol.api import ArtifactOut, ArtifactType, ReleaseCreate, ReleaseOut
from fleetwarden.protocol.device import HealthCheck
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import Artifact, Release, ReleaseArtifact
from fleetwarden.server.services import audit

__all__ = [
    "create_release",
    "get_artifact",
    "get_release",
    "list_artifacts",
    "list_releases",
    "record",
    "release_out",
    "upload",
    "validate_meta",
]


def validate_meta(kind: ArtifactType, meta: dict[str, str]) -> None:
    """Type-specific metadata an installer will need, checked before any byte is stored.

    Raises:
        InputError: a required key is missing or a value is unsafe.
    """
    if kind is ArtifactType.FILE:
        path = meta.get("path", "")
        p = PurePosixPath(path)
        if not path or not p.is_absolute() or ".." in p.parts:
            raise InputError("file artifacts need meta path=/absolute/destination without '..'")
        mode = meta.get("mode")
        if mode is not None and not (
            mode.isdigit() and set(mode) <= set("01234567") and len(mode) <= 4
        ):
            raise InputError(f"meta mode must be octal like 0644, got {mode!r}")


async def upload(
    ctx: ServerContext,
    chunks: AsyncIterator[bytes],
    *,
    name: str,
    version: str,
    kind: ArtifactType,
    compatible_models: list[str],
    meta: dict[str, str],
    expected_sha256: str | None,
    expected_size: int | None,
    actor: str,
) -> ArtifactOut:
    """Stream an upload into the blob store, then record it.

    Raises:
        InputError, PayloadTooLarge, IntegrityError: bad metadata, too big, or corrupt.
        ConflictError: an artifact with this name and version exists.
    """
    validate_meta(kind, meta)
    with ctx.db.read() as s:
        _ensure_new(s, name, version)
    blob = await ctx.store.put(
        chunks,
        max_bytes=ctx.settings.max_upload_bytes,
        expected_sha256=expected_sha256,
        expected_size=expected_size,
    )
    now = ctx.clock()
    try:
        with ctx.db.write() as s:
            _ensure_new(s, name, version)
            # The TUF release counter: upload order within the name. Agents refuse a lower
            # counter than the one installed (core.tuf_rules rule 6).
            counter = 1 + (
                s.scalar(select(func.max(Artifact.release_counter)).where(Artifact.name == name))
                or 0
            )
            row = Artifact(
                release_counter=counter,
                name=name,
                version=version,
                type=kind.value,
                sha256=blob.sha256,
                size=blob.size,
                compatible_models=sorted(set(compatible_models)),
                meta=meta,
                created_at=now,
                created_by=actor,
            )
            return record(
                ctx,
                s,
                row,
                now=now,
                actor=actor,
                action="artifact.upload",
                after={
                    "name": name,
                    "version": version,
                    "type": kind.value,
                    "sha256": blob.sha256,
                    "size": blob.size,
                },
            )
    except DBIntegrityError as e:  # lost a race with an identical upload
        raise ConflictError(f"artifact {name}@{version} already exists") from e


def record(
    ctx: ServerContext,
    s: Session,
    row: Artifact,
    *,
    now: datetime,
    actor: str,
    action: str,
    after: dict[str, Any],
) -> ArtifactOut:
    """Insert a stored blob's artifact row, sign it into the TUF image repository and audit
    it, all in the caller's transaction (uploads and server-built deltas alike)."""
    s.add(row)
    s.flush()
    ctx.tuf.publish_image(s, now, add=[row])
    audit.record(
        s,
        at=now,
        actor=actor,
        action=action,
        target_type="artifact",
        target_id=row.id,
        after=after,
    )
    return ArtifactOut.model_validate(row)


def _ensure_new(s: Session, name: str, version: str) -> None:
    if s.scalar(select(Artifact.id).where(Artifact.name == name, Artifact.version == version)):
        raise ConflictError(f"artifact {name}@{version} already exists")


def list_artifacts(ctx: ServerContext, *, name: str | None = None) -> list[ArtifactOut]:
    with ctx.db.read() as s:
        q = select(Artifact).order_by(Artifact.name, Artifact.id)
        if name:
            q = q.where(Artifact.name == name)
        return [ArtifactOut.model_validate(a) for a in s.scalars(q)]


def get_artifact(ctx: ServerContext, artifact_id: int) -> ArtifactOut:
    with ctx.db.read() as s:
        a = s.get(Artifact, artifact_id)
        if a is None:
            raise NotFoundError(f"no artifact {artifact_id}")
        return ArtifactOut.model_validate(a)


def release_out(s: Session, r: Release) -> ReleaseOut:
    arts = s.scalars(
        select(Artifact)
        .join(ReleaseArtifact, ReleaseArtifact.artifact_id == Artifact.id)
        .where(ReleaseArtifact.release_id == r.id)
        .order_by(ReleaseArtifact.position)
    )
    return ReleaseOut(
        id=r.id,
        name=r.name,
        version=r.version,
        description=r.description,
        artifacts=[ArtifactOut.model_validate(a) for a in arts],
        health_checks=[HealthCheck.model_validate(h) for h in r.health_checks],
        created_at=r.created_at,
    )


def create_release(ctx: ServerContext, body: ReleaseCreate, *, actor: str) -> ReleaseOut:
    """Raises ``NotFoundError`` for an unknown artifact, ``ConflictError`` for a duplicate."""
    if len(set(body.artifacts)) != len(body.artifacts):
        raise InputError("a release lists each artifact once")
    now = ctx.clock()
    try:
        with ctx.db.write() as s:
            if s.scalar(
                select(Release.id).where(Release.name == body.name, Release.version == body.version)
            ):
                raise ConflictError(f"release {body.name}@{body.version} already exists")
            for aid in body.artifacts:
                if s.get(Artifact, aid) is None:
                    raise NotFoundError(f"no artifact {aid}")
            r = Release(
                name=body.name,
                version=body.version,
                description=body.description,
                health_checks=[h.model_dump() for h in body.health_checks],
                created_at=now,
                created_by=actor,
            )
            s.add(r)
            s.flush()
            for pos, aid in enumerate(body.artifacts):
                s.add(ReleaseArtifact(release_id=r.id, artifact_id=aid, position=pos))
            s.flush()
            audit.record(
                s,
                at=now,
                actor=actor,
                action="release.create",
                target_type="release",
                target_id=r.id,
                after={"name": r.name, "version": r.version, "artifacts": list(body.artifacts)},
            )
            return release_out(s, r)
    except DBIntegrityError as e:
        raise ConflictError(f"release {body.name}@{body.version} already exists") from e


def list_releases(ctx: ServerContext) -> list[ReleaseOut]:
    with ctx.db.read() as s:
        return [
            release_out(s, r) for r in s.scalars(select(Release).order_by(Release.name, Release.id))
        ]


def get_release(ctx: ServerContext, ref: str) -> ReleaseOut:
    """Look a release up by id or by ``name@version``."""
    with ctx.db.read() as s:
        if ref.isdigit():
            r = s.get(Release, int(ref))
        else:
            name, _, version = ref.partition("@")
            r = s.scalar(select(Release).where(Release.name == name, Release.version == version))
        if r is None:
            raise NotFoundError(f"no release {ref!r}")
        return release_out(s, r)
