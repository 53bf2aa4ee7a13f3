"""Image deltas on the server: build one from two image artifacts, and choose it for a device.

A delta is an artifact like any other (blob store, TUF image repository, audit) of type
``image``, named like its target, versioned ``<target>+from.<base>``, with the target's TUF
release counter (so installing it never looks like a rollback) and ``core.delta.DeltaSpec`` in
its ``meta`` plus ``delta_of`` (the target's id).

Choosing (``choose_delta``, when an assignment is made): the device's installed release must
carry exactly the delta's base image, and the device must not have refused a delta for this
release before. A device that refuses one (its running slot is not the base after all) fails
the assignment with "delta refused"; its next assignment of that release gets the full image.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetwarden.core import delta as rules
from fleetwarden.core.delta import DeltaSpec, make_delta
from fleetwarden.errors import ConflictError, InputError, NotFoundError
from fleetwarden.protocol.api import ArtifactOut, ArtifactType
from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import Artifact, Assignment, Device, Release, ReleaseArtifact
from fleetwarden.server.services import artifacts

__all__ = ["DELTA_REFUSED", "choose_delta", "create_delta", "delta_for"]

#: What the agent's refusal of a delta starts with (agent.delta).
DELTA_REFUSED = "delta refused"


async def create_delta(
    ctx: ServerContext, target_id: int, base_id: int, *, actor: str
) -> ArtifactOut:
    """Build, store and sign the delta from artifact ``base_id`` to ``target_id``.

    Raises:
        NotFoundError: either artifact is missing. InputError: they are not two images of the
        same name, or the delta would save too little. ConflictError: it exists already.
    """
    with ctx.db.read() as s:
        target, base = s.get(Artifact, target_id), s.get(Artifact, base_id)
        if target is None or base is None:
            raise NotFoundError(f"no artifact {target_id if target is None else base_id}")
        if target.type != ArtifactType.IMAGE.value or base.type != ArtifactType.IMAGE.value:
            raise InputError("deltas are made between two image artifacts")
        if target.name != base.name or target.id == base.id:
            raise InputError(
                f"a delta needs two versions of one image, not {base.name}@{base.version} "
                f"and {target.name}@{target.version}"
            )
        if "delta_base" in target.meta or "delta_base" in base.meta:
            raise InputError("a delta cannot be made from or to another delta")
        version = f"{target.version}+from.{base.version}"[:128]
        if s.scalar(
            select(Artifact.id).where(Artifact.name == target.name, Artifact.version == version)
        ):
            raise ConflictError(f"delta {target.name}@{version} already exists")
        t_sha, t_size, b_sha, b_size = target.sha256, target.size, base.sha256, base.size
        name, counter, models = target.name, target.release_counter, target.compatible_models

    def build() -> bytes:
        old = b"".join(ctx.store.iter_range(b_sha, 0, b_size))
        new = b"".join(ctx.store.iter_range(t_sha, 0, t_size))
        return make_delta(old, new)

    delta = await anyio.to_thread.run_sync(build)
    if not rules.worth_shipping(len(delta), t_size):
        raise InputError(
            f"the delta is {len(delta)} bytes, {len(delta) / t_size:.0%} of the image: "
            "not worth shipping; devices get the full image"
        )
    spec = DeltaSpec(b_sha, b_size, t_sha, t_size)

    async def one_chunk() -> AsyncIterator[bytes]:
        yield delta

    blob = await ctx.store.put(
        one_chunk(),
        max_bytes=ctx.settings.max_upload_bytes,
        expected_sha256=hashlib.sha256(delta).hexdigest(),
    )
    now = ctx.clock()
    with ctx.db.write() as s:
        row = Artifact(
            release_counter=counter,
            name=name,
            version=version,
            type=ArtifactType.IMAGE.value,
            sha256=blob.sha256,
            size=blob.size,
            compatible_models=list(models or []),
            meta=spec.to_meta() | {"delta_of": str(target_id)},
            created_at=now,
            created_by=actor,
        )
        return artifacts.record(
            ctx,
            s,
            row,
            now=now,
            actor=actor,
            action="artifact.delta",
            after={"target": target_id, "base": base_id, "size": blob.size, "of": t_size},
        )


def _image_of(s: Session, release_id: int) -> Artifact | None:
    """The release's one image artifact, if it has exactly one (memoized per transaction:
    a rollout tick asks this once per device for the same release)."""
    memo: dict[int, Artifact | None] = s.info.setdefault("release_image", {})
    if release_id not in memo:
        images = [
            a
            for a in s.scalars(
                select(Artifact)
                .join(ReleaseArtifact, ReleaseArtifact.artifact_id == Artifact.id)
                .where(ReleaseArtifact.release_id == release_id)
            )
            if a.type == ArtifactType.IMAGE.value
        ]
        memo[release_id] = images[0] if len(images) == 1 else None
    return memo[release_id]


def choose_delta(s: Session, device: Device, release_id: int) -> int | None:
    """Gather what ``core.delta.choose_delta`` needs for this device and release."""
    target = _image_of(s, release_id)
    if target is None or "@" not in device.installed_release:
        return None
    name, version = device.installed_release.rsplit("@", 1)
    installed = s.scalar(select(Release).where(Release.name == name, Release.version == version))
    base = _image_of(s, installed.id) if installed is not None else None
    if base is None or base.id == target.id:
        return None  # spare the queries below: no base image, nothing to build on
    refused = s.scalar(
        select(Assignment.id).where(
            Assignment.device_id == device.id,
            Assignment.release_id == release_id,
            Assignment.detail.contains(DELTA_REFUSED),
        )
    )
    candidates = s.execute(
        select(Artifact.id, Artifact.meta).where(
            Artifact.name == target.name, Artifact.version.startswith(f"{target.version}+from.")
        )
    )
    return rules.choose_delta(
        target.id,
        base.sha256,
        ((aid, meta) for aid, meta in candidates),
        refused_before=refused is not None,
    )


def delta_for(s: Session, delta_artifact_id: int | None) -> tuple[int, Artifact] | None:
    """(id of the artifact it replaces, the delta) for an assignment's delta, if any."""
    d = s.get(Artifact, delta_artifact_id) if delta_artifact_id is not None else None
    replaces = rules.delta_of(d.meta) if d is not None else None
    return None if d is None or replaces is None else (replaces, d)
