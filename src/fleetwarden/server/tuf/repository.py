"""One TUF repository (image or director), signed from plain target entries and stored in the
database, with consistent snapshots.

Layout of both repositories: ``root`` (offline keys) → ``targets`` (online; delegates every
path to hashed bins and lists no target itself) → bins → targets; ``snapshot`` lists the
version of ``targets`` and of every bin; ``timestamp`` names the snapshot.

- The image repository uses the TUF specification's hashed bins (``path_hash_prefixes``), so
  any conforming client reads it.
- The director repository has one entry per device and artifact and must scale to 100,000+
  devices with small per-device downloads, so it uses TAP 15 succinct hash bins (one line in
  ``targets``, supported by python-tuf's ngclient, which is what our agent runs).

``publish`` re-signs only what changed: each bin's ``digest`` is the hash of its entries, so an
unchanged bin keeps its version; a role is also re-signed when less than a share of its
lifetime is left (``core.tuf_rules.resign_due``), which is how the timestamp stays fresh.
Callers hold the repository's write lock: the database write transaction (BEGIN IMMEDIATE on
SQLite; an advisory lock on PostgreSQL, taken here).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from fleetwarden.core.tuf_rules import hash_bin, resign_due
from fleetwarden.errors import ConfigError, NotFoundError, SigningError
from fleetwarden.server.models import TufMetadata
from fleetwarden.server.tuf.keys import Keyring

__all__ = ["LIFETIMES", "RepoSpec", "Repository"]

LIFETIMES = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "bins": timedelta(days=30),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}
# Re-sign once less than this share of the lifetime is left (timestamp: every 12 h).
_RESIGN_SHARE = {"targets": 1 / 3, "bins": 1 / 3, "snapshot": 1 / 3, "timestamp": 1 / 2}
_KEEP_VERSIONS = 3  # older versions of a role are pruned (clients mid-refresh still find them)
_COMPACT = JSONSerializer(compact=True)
_LOCK_KEY = 724300103


@dataclass(frozen=True)
class RepoSpec:
    name: str  # "image" or "director": the ``repo`` column and the URL segment
    targets_key: str  # online key that signs targets and the bins
    bin_bits: int  # 2**bin_bits bins
    succinct: bool  # TAP 15 succinct bins (director) or spec hashed bins (image)

    def __post_init__(self) -> None:
        if not self.succinct and self.bin_bits not in (4, 8):
            raise ConfigError("image repository bins: bin_bits must be 4 or 8 (16 or 256 bins)")
        if not 1 <= self.bin_bits <= 16:
            raise ConfigError("bin_bits must be between 1 and 16")


@dataclass(frozen=True)
class _Row:
    version: int
    expires: datetime
    digest: str


def _digest(value: Any) -> str:
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


class Repository:
    def __init__(self, spec: RepoSpec) -> None:
        self.spec = spec
        if spec.succinct:
            self._succinct = SuccinctRoles([], 1, spec.bin_bits, "bins")
            self.bin_names = list(self._succinct.get_roles())
        else:
            self._prefix_len = spec.bin_bits // 4
            self.bin_names = [f"bins-{i:0{self._prefix_len}x}" for i in range(2**spec.bin_bits)]

    def __repr__(self) -> str:
        return f"<Repository {self.spec.name} bins={len(self.bin_names)}>"

    # -- layout ------------------------------------------------------------------------------
    def bin_for(self, path: str) -> str:
        if self.spec.succinct:
            return self._succinct.get_role_for_target(path)
        return f"bins-{hash_bin(path, self._prefix_len)}"

    def _delegations(self, keyring: Keyring) -> Delegations:
        key = keyring.public(self.spec.targets_key)
        if self.spec.succinct:
            succinct = SuccinctRoles([key.keyid], 1, self.spec.bin_bits, "bins")
            return Delegations({key.keyid: key}, succinct_roles=succinct)
        roles = {
            name: DelegatedRole(
                name, [key.keyid], 1, True, path_hash_prefixes=[name.removeprefix("bins-")]
            )
            for name in self.bin_names
        }
        return Delegations({key.keyid: key}, roles=roles)

    # -- reading -----------------------------------------------------------------------------
    def _latest(self, s: Session) -> dict[str, _Row]:
        """The newest version of every role, with its expiry and digest (one query)."""
        newest = (
            select(TufMetadata.role, func.max(TufMetadata.version).label("v"))
            .where(TufMetadata.repo == self.spec.name)
            .group_by(TufMetadata.role)
            .subquery()
        )
        rows = s.execute(
            select(TufMetadata.role, TufMetadata.version, TufMetadata.expires, TufMetadata.digest)
            .join(
                newest,
                (TufMetadata.role == newest.c.role) & (TufMetadata.version == newest.c.v),
            )
            .where(TufMetadata.repo == self.spec.name)
        ).all()
        return {r.role: _Row(r.version, r.expires, r.digest) for r in rows}

    def file(self, s: Session, filename: str) -> bytes:
        """The bytes of ``timestamp.json``, ``root.json`` (newest) or ``<version>.<role>.json``.

        Raises:
            NotFoundError: no such metadata.
        """
        if not filename.endswith(".json"):
            raise NotFoundError(f"no TUF metadata {filename!r}")
        stem = filename.removesuffix(".json")
        q = select(TufMetadata.data).where(TufMetadata.repo == self.spec.name)
        if stem in ("timestamp", "root"):
            q = q.where(TufMetadata.role == stem).order_by(TufMetadata.version.desc()).limit(1)
        else:
            version, _, role = stem.partition(".")
            if not version.isdigit() or not role or len(version) > 10:
                raise NotFoundError(f"no TUF metadata {filename!r}")
            q = q.where(TufMetadata.role == role, TufMetadata.version == int(version))
        data = s.execute(q).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"no TUF metadata {filename!r} in the {self.spec.name} repository")
        return data

    def root(self, s: Session) -> Metadata[Root] | None:
        row = s.execute(
            select(TufMetadata.data)
            .where(TufMetadata.repo == self.spec.name, TufMetadata.role == "root")
            .order_by(TufMetadata.version.desc())
            .limit(1)
        ).scalar_one_or_none()
        return None if row is None else Metadata[Root].from_bytes(row)

    def signed_targets(self, s: Session, keyring: Keyring, role: str) -> dict[str, TargetFile]:
        """The targets of the newest signed version of ``role`` (a bin), after verifying its
        signature with the current key; empty if the role was never signed.

        Raises:
            SigningError: the stored bin does not verify (altered in the database).
        """
        data = s.execute(
            select(TufMetadata.data)
            .where(TufMetadata.repo == self.spec.name, TufMetadata.role == role)
            .order_by(TufMetadata.version.desc())
            .limit(1)
        ).scalar_one_or_none()
        if data is None:
            return {}
        md = Metadata[Targets].from_bytes(data)
        key = keyring.public(self.spec.targets_key)
        try:
            key.verify_signature(md.signatures[key.keyid], md.signed_bytes)
        except Exception as e:  # KeyError (unsigned) or UnverifiedSignatureError
            raise SigningError(
                f"stored {self.spec.name}/{role} metadata does not verify: refusing to re-sign it"
            ) from e
        return dict(md.signed.targets)

    def status(self, s: Session) -> dict[str, tuple[int, datetime]]:
        return {role: (r.version, r.expires) for role, r in self._latest(s).items()}

    # -- writing -----------------------------------------------------------------------------
    def _lock(self, s: Session) -> None:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})

    def _store(self, s: Session, role: str, md: Metadata[Any], digest: str, now: datetime) -> None:
        s.add(
            TufMetadata(
                repo=self.spec.name,
                role=role,
                version=md.signed.version,
                expires=md.signed.expires,
                digest=digest,
                data=md.to_bytes(_COMPACT),
                created_at=now,
            )
        )
        if md.signed.version > _KEEP_VERSIONS and role != "root":
            s.execute(
                delete(TufMetadata).where(
                    TufMetadata.repo == self.spec.name,
                    TufMetadata.role == role,
                    TufMetadata.version <= md.signed.version - _KEEP_VERSIONS,
                )
            )

    @staticmethod
    def _sign(md: Metadata[Any], keyring: Keyring, key: str) -> None:
        try:
            md.sign(keyring.signer(key), append=False)
        except SigningError:
            raise
        except Exception as e:  # a token or key that fails must not publish anything
            raise SigningError(f"signing with the {key} key failed: {type(e).__name__}") from e

    def store_root(self, s: Session, root: Metadata[Root], now: datetime) -> None:
        """Record a root signed elsewhere (``keys init``/``keys rotate`` hold the root keys)."""
        self._lock(s)
        self._store(s, "root", root, _digest(root.signed.to_dict()), now)

    def _bins(
        self,
        s: Session,
        keyring: Keyring,
        latest: Mapping[str, _Row],
        now: datetime,
        entries: Mapping[str, TargetFile] | None,
        changes: Mapping[str, TargetFile | None] | None,
        *,
        force: bool,
    ) -> dict[str, dict[str, TargetFile]]:
        """The content of every bin that may need signing, by bin name."""
        if entries is not None:
            by_bin: dict[str, dict[str, TargetFile]] = {name: {} for name in self.bin_names}
            for path, tf in entries.items():
                by_bin[self.bin_for(path)][path] = tf
            return by_bin
        # Incremental: start from what is signed now (verified, so that rows altered in the
        # database are not re-signed), apply the changes, and re-sign the bins due.
        touched = {self.bin_for(p) for p in changes or {}}
        touched |= {
            name
            for name in self.bin_names
            if force
            or name not in latest
            or resign_due(latest[name].expires, now, LIFETIMES["bins"], _RESIGN_SHARE["bins"])
        }
        by_bin = {name: self.signed_targets(s, keyring, name) for name in touched}
        for path, change in (changes or {}).items():
            if change is None:
                by_bin[self.bin_for(path)].pop(path, None)
            else:
                by_bin[self.bin_for(path)][path] = change
        return by_bin

    def publish(
        self,
        s: Session,
        keyring: Keyring,
        entries: Mapping[str, TargetFile] | None,
        now: datetime,
        *,
        changes: Mapping[str, TargetFile | None] | None = None,
        force: bool = False,
    ) -> list[str]:
        """Sign what changed or is due; return the roles signed (empty: nothing to do).

        ``entries`` is every target of the repository (the director, derived from the
        assignments). With ``entries=None`` the signed bins are the source of truth and only
        ``changes`` (path → new entry, or None to remove) are applied: the image repository,
        whose entries are signed when the server itself hashed the uploaded bytes, so that a
        database changed behind its back cannot get a different hash signed.

        Raises:
            ConfigError: the repository has no root yet.
            SigningError: an online key is missing or failed; nothing is stored.
        """
        self._lock(s)
        latest = self._latest(s)
        if "root" not in latest:
            raise ConfigError(f"the {self.spec.name} TUF repository has no root: run keys init")
        exp = now.replace(microsecond=0)

        def due(role: str, kind: str, digest: str) -> bool:
            row = latest.get(role)
            return (
                force
                or row is None
                or row.digest != digest
                or resign_due(row.expires, now, LIFETIMES[kind], _RESIGN_SHARE[kind])
            )

        def next_version(role: str) -> int:
            row = latest.get(role)
            return 1 if row is None else row.version + 1

        signed: list[str] = []
        delegations = self._delegations(keyring)
        t_digest = _digest(delegations.to_dict())
        if due("targets", "targets", t_digest):
            md = Metadata(
                Targets(
                    version=next_version("targets"),
                    expires=exp + LIFETIMES["targets"],
                    delegations=delegations,
                )
            )
            self._sign(md, keyring, self.spec.targets_key)
            self._store(s, "targets", md, t_digest, now)
            signed.append("targets")

        by_bin = self._bins(s, keyring, latest, now, entries, changes, force=force)
        for name, targets in by_bin.items():
            digest = _digest({p: tf.to_dict() for p, tf in targets.items()})
            if not due(name, "bins", digest):
                continue
            md = Metadata(
                Targets(
                    version=next_version(name),
                    expires=exp + LIFETIMES["bins"],
                    targets=dict(sorted(targets.items())),
                )
            )
            self._sign(md, keyring, self.spec.targets_key)
            self._store(s, name, md, digest, now)
            signed.append(name)

        versions = {role: row.version for role, row in latest.items() if role != "root"}
        versions.pop("timestamp", None)
        versions.pop("snapshot", None)
        for role in signed:
            versions[role] = next_version(role)
        meta = {f"{role}.json": MetaFile(version=v) for role, v in sorted(versions.items())}
        s_digest = _digest({k: m.version for k, m in meta.items()})
        if signed or due("snapshot", "snapshot", s_digest):
            md_s = Metadata(
                Snapshot(
                    version=next_version("snapshot"),
                    expires=exp + LIFETIMES["snapshot"],
                    meta=meta,
                )
            )
            self._sign(md_s, keyring, "snapshot")
            self._store(s, "snapshot", md_s, s_digest, now)
            signed.append("snapshot")
            snapshot_version = md_s.signed.version
        else:
            snapshot_version = latest["snapshot"].version
        ts_digest = _digest({"snapshot": snapshot_version})
        if "snapshot" in signed or due("timestamp", "timestamp", ts_digest):
            md_t = Metadata(
                Timestamp(
                    version=next_version("timestamp"),
                    expires=exp + LIFETIMES["timestamp"],
                    snapshot_meta=MetaFile(version=snapshot_version),
                )
            )
            self._sign(md_t, keyring, "timestamp")
            self._store(s, "timestamp", md_t, ts_digest, now)
            signed.append("timestamp")
        return signed
