"""The server's TUF service: initialise, rotate, and publish both repositories from the
database (artifacts → image targets; unfinished assignments → director targets).

``publish_image`` and ``publish_director`` run inside the caller's write transaction, so an
assignment and the director metadata that authorises it commit together: a device that sees
the assignment can always verify it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from tuf.api.metadata import Metadata, Root, TargetFile

from fleetwarden.core.assignments import ACTIVE_STATES
from fleetwarden.core.delta import delta_of
from fleetwarden.core.tuf_rules import director_path, image_path
from fleetwarden.errors import ConfigError
from fleetwarden.server.db import Database
from fleetwarden.server.models import (
    Artifact,
    Assignment,
    AssignmentEvent,
    ReleaseArtifact,
    TufMetadata,
)
from fleetwarden.server.tuf.keys import (
    ONLINE_KEYS,
    Keyring,
    create_file_key,
    create_online_keys,
    create_root_keys,
    load_keyring,
    load_root_keys,
    read_passphrase,
)
from fleetwarden.server.tuf.repository import LIFETIMES, Repository, RepoSpec

__all__ = ["RepoStatus", "TufService", "build_root"]

log = logging.getLogger("fleetwarden.tuf")
_TARGETS_KEY = {"image": "targets", "director": "director"}


def build_root(
    *,
    version: int,
    root_keys: Sequence[Key],
    threshold: int,
    keyring: Keyring,
    repo: str,
    expires: datetime,
) -> Metadata[Root]:
    """An unsigned root for ``repo``: root keys with ``threshold``, one online key per role."""
    if not 1 <= threshold <= len(root_keys):
        raise ConfigError(f"root threshold must be between 1 and {len(root_keys)}")
    root = Root(version=version, expires=expires, consistent_snapshot=True)
    for key in root_keys:
        root.add_key(key, "root")
    root.roles["root"].threshold = threshold
    root.add_key(keyring.public(_TARGETS_KEY[repo]), "targets")
    root.add_key(keyring.public("snapshot"), "snapshot")
    root.add_key(keyring.public("timestamp"), "timestamp")
    return Metadata(root)


def sign_root(md: Metadata[Root], signers: Sequence[Signer]) -> None:
    for signer in signers:
        md.sign(signer, append=True)


@dataclass(frozen=True)
class RepoStatus:
    repo: str
    role: str
    version: int
    expires: datetime


class TufService:
    def __init__(
        self, db: Database, key_dir: Path, *, image_bin_bits: int = 4, director_bin_bits: int = 8
    ) -> None:
        self.db = db
        self.key_dir = key_dir
        self.image = Repository(RepoSpec("image", "targets", image_bin_bits, succinct=False))
        self.director = Repository(
            RepoSpec("director", "director", director_bin_bits, succinct=True)
        )
        self.keyring = Keyring()
        self._root_versions: tuple[int, int] | None = None
        self._director_token: int | None = None

    def __repr__(self) -> str:
        return f"<TufService {self.key_dir} {self.keyring!r}>"

    def repo(self, name: str) -> Repository:
        return {"image": self.image, "director": self.director}[name]

    # -- keys --------------------------------------------------------------------------------
    def _passphrase(self, *, create: bool = False) -> bytes | None:
        if not any(self.key_dir.glob("*.pem")) and not create:
            return None
        return read_passphrase(self.key_dir, create=create)

    def _ensure_keys(self, s: Session) -> Keyring:
        """The online keys, reloaded when a root rotation (``keys rotate``) changed them."""
        image, director = (
            s.execute(
                select(func.max(TufMetadata.version)).where(
                    TufMetadata.repo == r, TufMetadata.role == "root"
                )
            ).scalar_one_or_none()
            or 0
            for r in ("image", "director")
        )
        if (image, director) != self._root_versions or not self.keyring.signers:
            self.keyring = load_keyring(self.key_dir, self._passphrase())
            self._root_versions = (image, director)
        return self.keyring

    def initialized(self, s: Session) -> bool:
        return self.image.root(s) is not None and self.director.root(s) is not None

    def init(
        self,
        now: datetime,
        *,
        root_dir: Path,
        root_passphrase: bytes,
        root_keys: int = 1,
        threshold: int = 1,
        pkcs11_uri: str | None = None,
    ) -> None:
        """Create root keys (in ``root_dir``), online keys, and root v1 of both repositories,
        then publish. Refuses when the repositories already have a root."""
        with self.db.read() as s:
            if self.image.root(s) is not None or self.director.root(s) is not None:
                raise ConfigError("the TUF repositories are initialised already (keys status)")
        if any((self.key_dir / f"{n}.pem").exists() for n in ONLINE_KEYS):
            raise ConfigError(f"online keys exist in {self.key_dir}: refusing to replace them")
        roots = create_root_keys(root_dir, root_keys, root_passphrase)
        keyring = create_online_keys(
            self.key_dir, read_passphrase(self.key_dir, create=True), pkcs11_uri=pkcs11_uri
        )
        with self.db.write() as s:
            for repo in (self.image, self.director):
                md = build_root(
                    version=1,
                    root_keys=[r.public_key for r in roots],
                    threshold=threshold,
                    keyring=keyring,
                    repo=repo.spec.name,
                    expires=now.replace(microsecond=0) + LIFETIMES["root"],
                )
                sign_root(md, roots)
                repo.store_root(s, md, now)
        self.keyring, self._root_versions = keyring, None
        with self.db.write() as s:
            # Artifacts uploaded before the repositories existed are signed as they are now.
            existing = list(s.scalars(select(Artifact)))
            self.publish_image(s, now, add=existing)
        self.publish_all(now)

    def rotate(
        self, role: str, now: datetime, *, root_dir: Path, root_passphrase: bytes
    ) -> list[int]:
        """Replace the key of ``role`` (an online key, or ``root``: one new root key per old
        one, same threshold) and sign root N+1 of both repositories with the old root keys
        (and the new ones, for a root rotation). Returns the new root versions."""

        old_roots = load_root_keys(root_dir, root_passphrase)
        with self.db.read() as s:
            current = {r.spec.name: r.root(s) for r in (self.image, self.director)}
        if None in current.values():
            raise ConfigError("the TUF repositories are not initialised (keys init)")
        keyring = load_keyring(self.key_dir, self._passphrase())
        new_roots: list[Signer] = []
        if role == "root":
            archive = root_dir / "retired"
            archive.mkdir(exist_ok=True, mode=0o700)
            for n, _ in enumerate(old_roots, 1):
                (root_dir / f"root-{n}.pem").rename(archive / f"root-{n}.v{now:%Y%m%d%H%M%S}.pem")
            new_roots = [
                create_file_key(root_dir / f"root-{n}.pem", root_passphrase)
                for n in range(1, len(old_roots) + 1)
            ]
        elif role in ONLINE_KEYS:
            backend = keyring.backend.get(role, "file")
            pem, uri_file = self.key_dir / f"{role}.pem", self.key_dir / f"{role}.pkcs11"
            if backend == "pkcs11":
                from fleetwarden.server.tuf import pkcs11

                old_uri = uri_file.read_text().strip()
                new_uri = pkcs11.with_object(old_uri, f"{role}-{now:%Y%m%d%H%M%S}")
                pkcs11.generate_key(new_uri)
                uri_file.write_text(new_uri)
            else:
                pem.rename(self.key_dir / f"{role}.pem.retired-{now:%Y%m%d%H%M%S}")
                create_file_key(pem, read_passphrase(self.key_dir))
            keyring = load_keyring(self.key_dir, self._passphrase())
        else:
            raise ConfigError(f"unknown TUF role {role!r}: root or one of {', '.join(ONLINE_KEYS)}")
        versions = []
        with self.db.write() as s:
            for repo in (self.image, self.director):
                old = current[repo.spec.name]
                assert old is not None  # noqa: S101 - checked above
                root_keys = (
                    [r.public_key for r in new_roots]
                    if new_roots
                    else [old.signed.keys[k] for k in old.signed.roles["root"].keyids]
                )
                md = build_root(
                    version=old.signed.version + 1,
                    root_keys=root_keys,
                    threshold=old.signed.roles["root"].threshold,
                    keyring=keyring,
                    repo=repo.spec.name,
                    expires=now.replace(microsecond=0) + LIFETIMES["root"],
                )
                sign_root(md, old_roots + new_roots)
                # The new root must verify under the old one and under itself (TUF 5.3.4).
                old.verify_delegate("root", md)
                md.verify_delegate("root", md)
                repo.store_root(s, md, now)
                versions.append(md.signed.version)
        self.keyring, self._root_versions = keyring, None
        self.publish_all(now, force=True)
        return versions

    def bootstrap(self, now: datetime, *, dev_root_dir: Path | None) -> None:
        """At server start: a development server without keys creates them (1-of-1 root in
        ``dev_root_dir``); then everything due is published."""
        with self.db.read() as s:
            ready = self.initialized(s)
        if not ready:
            if dev_root_dir is None:
                raise ConfigError("no TUF root: run `fleetwarden keys init` first")
            log.warning(
                "no TUF keys: created a development root key in %s; for production run "
                "`fleetwarden keys init` with offline root keys (docs/tuf.md)",
                dev_root_dir,
            )
            try:
                self.init(
                    now,
                    root_dir=dev_root_dir,
                    root_passphrase=read_passphrase(dev_root_dir, create=True),
                )
            except ConfigError:
                # Another replica or worker initialised meanwhile: use what it created.
                with self.db.read() as s:
                    if not self.initialized(s):
                        raise
        # Nothing to publish here otherwise: the refresh job's first run (within
        # tuf_refresh_seconds) re-signs whatever expired while the server was down.

    # -- publishing --------------------------------------------------------------------------
    @staticmethod
    def image_entry(a: Artifact) -> TargetFile:
        """The image repository's entry for an artifact row (signed at upload, when the
        server itself computed the hash from the bytes)."""
        return _target(
            image_path(a.id, a.name, a.version),
            a.size,
            {"sha256": a.sha256},
            {
                "artifact_id": a.id,
                "type": a.type,
                "release_counter": a.release_counter,
                "withdrawn": a.withdrawn,
                "compatible_models": list(a.compatible_models or []),
            },
        )

    def director_entries(self, s: Session) -> dict[str, TargetFile]:
        rows = s.execute(
            select(
                Assignment.id,
                Assignment.device_id,
                Artifact.id.label("artifact_id"),
                Artifact.name,
                Artifact.version,
                Artifact.sha256,
                Artifact.size,
                Artifact.release_counter,
                Assignment.delta_artifact_id,
            )
            .join(ReleaseArtifact, ReleaseArtifact.release_id == Assignment.release_id)
            .join(Artifact, Artifact.id == ReleaseArtifact.artifact_id)
            .where(Assignment.state.in_([st.value for st in ACTIVE_STATES]))
        ).all()
        # An assignment that ships a delta lists the delta in place of the image it rebuilds.
        delta_ids = {r.delta_artifact_id for r in rows if r.delta_artifact_id is not None}
        swaps: dict[int, Artifact] = {}
        if delta_ids:
            swaps = {d.id: d for d in s.scalars(select(Artifact).where(Artifact.id.in_(delta_ids)))}
        out = {}
        for r in rows:
            aid, name, version, sha, size, counter = (
                r.artifact_id,
                r.name,
                r.version,
                r.sha256,
                r.size,
                r.release_counter,
            )
            d = swaps.get(r.delta_artifact_id) if r.delta_artifact_id is not None else None
            if d is not None and delta_of(d.meta) == r.artifact_id:
                aid, name, version, sha, size, counter = (
                    d.id,
                    d.name,
                    d.version,
                    d.sha256,
                    d.size,
                    d.release_counter,
                )
            path = director_path(r.device_id, image_path(aid, name, version))
            out[path] = _target(
                path,
                size,
                {"sha256": sha},
                {"device_id": r.device_id, "assignment_id": r.id, "release_counter": counter},
            )
        return out

    def publish_image(
        self,
        s: Session,
        now: datetime,
        *,
        add: Sequence[Artifact] = (),
        withdraw: Sequence[str] = (),
        force: bool = False,
    ) -> list[str]:
        """Sign new artifacts (``add``) and withdrawals (image paths) into the image bins,
        plus whatever is due; the rest of the bins is taken from their signed versions."""
        keyring = self._ensure_keys(s)
        changes: dict[str, TargetFile | None] = {}
        for a in add:
            tf = self.image_entry(a)
            changes[tf.path] = tf
        for path in withdraw:
            current = self.image.signed_targets(s, keyring, self.image.bin_for(path)).get(path)
            if current is not None:
                custom = dict(current.custom) | {"withdrawn": True}
                changes[path] = _target(path, current.length, dict(current.hashes), custom)
        return self.image.publish(s, keyring, None, now, changes=changes, force=force)

    def publish_director(self, s: Session, now: datetime, *, force: bool = False) -> list[str]:
        return self.director.publish(
            s, self._ensure_keys(s), self.director_entries(s), now, force=force
        )

    def publish_all(self, now: datetime, *, force: bool = False) -> list[str]:
        with self.db.write() as s:
            signed = [f"image/{r}" for r in self.publish_image(s, now, force=force)]
            signed += [f"director/{r}" for r in self.publish_director(s, now, force=force)]
        return signed

    def refresh(self, now: datetime, *, full: bool = False) -> list[str]:
        """The background job: re-sign what is due, and pick up assignment changes published
        lazily (a device's final report removes its director entry at the next refresh).
        The director's entries are only recomputed when an assignment changed (or ``full``)."""
        with self.db.write() as s:
            token = s.execute(select(func.max(AssignmentEvent.id))).scalar_one_or_none()
            signed = [f"image/{r}" for r in self.publish_image(s, now)]
            unchanged = token == self._director_token and not full
            entries = None if unchanged else self.director_entries(s)
            keyring = self._ensure_keys(s)
            signed += [f"director/{r}" for r in self.director.publish(s, keyring, entries, now)]
        self._director_token = token
        return signed

    def status(self) -> list[RepoStatus]:
        with self.db.read() as s:
            return [
                RepoStatus(repo.spec.name, role, version, expires)
                for repo in (self.image, self.director)
                for role, (version, expires) in sorted(repo.status(s).items())
                if not role.startswith("bins-")
            ]


def _target(path: str, length: int, hashes: dict[str, str], custom: dict[str, Any]) -> TargetFile:
    return TargetFile(length, hashes, path, unrecognized_fields={"custom": custom})
