"""The TUF attack suite against the real agent (reference/tuf-and-pki.md §3, §8 U1-U13).

Each attack is mounted the way an attacker who owns the server's database or blob store (or
one online key) would: by changing stored rows and bytes, never by patching the agent. Each
must end with the assignment refused for a specific reason and the device unchanged.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from sqlalchemy import delete, insert, select, update
from tuf.api.metadata import Metadata, Root, Timestamp

from fleetwarden.server.models import Artifact, Assignment, AssignmentEvent, Device, TufMetadata
from fleetwarden.server.tuf.keys import load_root_keys, read_passphrase
from tests.agent.conftest import drive
from tests.helpers import deploy, release, upload

GOOD = b"port = 1\n"


def _release(api, content: bytes, version: str) -> dict[str, Any]:
    art = upload(api, content, name="app-conf", version=version, meta=["path=/etc/app.conf"])
    return release(api, "app", version, [art["id"]])


def _latest_assignment(api) -> dict[str, Any]:
    dev = api.get("/api/v1/devices").json()["items"][0]
    return api.get(f"/api/v1/devices/{dev['id']}").json()["assignments"][0]  # type: ignore[no-any-return]


@pytest.fixture
def installed(api, make_agent, device_root: Path):
    """An agent that installed app 1 through TUF, so it trusts the current metadata."""
    agent = make_agent()
    drive(agent)
    deploy(api, _release(api, GOOD, "1")["id"], selector="lab=true")
    drive(agent)
    assert (device_root / "etc/app.conf").read_bytes() == GOOD
    assert _latest_assignment(api)["state"] == "succeeded"
    return agent


def _attempt(api, agent, content: bytes, version: str, tamper=None) -> dict[str, Any]:
    rel = _release(api, content, version)
    deploy(api, rel["id"], selector="lab=true")
    if tamper is not None:
        tamper(rel)
    drive(agent)
    return _latest_assignment(api)


def _refused(a: dict[str, Any], *words: str) -> None:
    assert a["state"] == "failed", a
    for w in words:
        assert w in a["detail"], a["detail"]


def _newest(ctx, repo: str, role: str) -> TufMetadata:
    with ctx.db.read() as s:
        return s.execute(
            select(TufMetadata)
            .where(TufMetadata.repo == repo, TufMetadata.role == role)
            .order_by(TufMetadata.version.desc())
            .limit(1)
        ).scalar_one()


def _put(ctx, repo: str, role: str, md: Metadata[Any]) -> None:
    """Store metadata as the newest version of ``role`` (what a database attacker can do)."""
    with ctx.db.write() as s:
        s.execute(
            delete(TufMetadata).where(
                TufMetadata.repo == repo,
                TufMetadata.role == role,
                TufMetadata.version >= md.signed.version,
            )
        )
        s.execute(
            insert(TufMetadata).values(
                repo=repo,
                role=role,
                version=md.signed.version,
                expires=md.signed.expires,
                digest="x",
                data=md.to_bytes(),
                created_at=md.signed.expires,
            )
        )


def _timestamp(ctx, repo: str = "image") -> Metadata[Timestamp]:
    return Metadata[Timestamp].from_bytes(_newest(ctx, repo, "timestamp").data)


# -- U1: arbitrary and tampered targets ---------------------------------------------------------
def test_tampered_blob_is_refused(api, ctx, installed, device_root):
    def swap(rel):
        ctx.store.inject(rel["artifacts"][0]["sha256"], b"port = 6\n")  # same length

    a = _attempt(api, installed, b"port = 2\n", "2", swap)
    _refused(a, "sha256")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


def test_hash_changed_in_the_database_is_refused(api, ctx, installed, device_root):
    """A database attacker points the artifact at other bytes: the director signs the new
    hash (it is derived from the database), the image repository still has the uploaded one."""
    evil = b"evil = 1\n"

    def rewrite(rel):
        evil_sha = hashlib.sha256(evil).hexdigest()
        ctx.store.inject(evil_sha, evil)
        with ctx.db.write() as s:
            s.execute(
                update(Artifact)
                .where(Artifact.id == rel["artifacts"][0]["id"])
                .values(sha256=evil_sha, size=len(evil))
            )
            s.info["tuf_director_changed"] = True  # the server re-signs the director

    a = _attempt(api, installed, b"port = 2\n", "2", rewrite)
    _refused(a, "refused", "disagree")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


# -- U2: endless data ---------------------------------------------------------------------------
def test_oversized_target_is_refused(api, ctx, installed, device_root):
    def grow(rel):
        ctx.store.inject(rel["artifacts"][0]["sha256"], b"port = 2\n" * 10_000)

    a = _attempt(api, installed, b"port = 2\n", "2", grow)
    _refused(a, "bytes")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


def test_oversized_timestamp_is_refused(api, ctx, installed, device_root):
    def bloat(_rel):
        md = _timestamp(ctx)
        md.signed.unrecognized_fields["padding"] = "x" * 20_000
        md.signed.version += 1
        md.sign(ctx.tuf.keyring.signer("timestamp"))
        _put(ctx, "image", "timestamp", md)

    a = _attempt(api, installed, b"port = 2\n", "2", bloat)
    _refused(a, "refused", "DownloadLengthMismatchError")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


# -- U3/U4: rollback and freeze -----------------------------------------------------------------
def test_rolled_back_timestamp_is_refused(api, ctx, installed, device_root):
    seen = json.loads((installed.config.data_dir / "tuf/image/timestamp.json").read_bytes())
    seen_version = seen["signed"]["version"]

    def replay(_rel):
        with ctx.db.write() as s:  # the attacker serves what came before the agent's version
            s.execute(
                delete(TufMetadata).where(
                    TufMetadata.repo == "image",
                    TufMetadata.role == "timestamp",
                    TufMetadata.version >= seen_version,
                )
            )

    a = _attempt(api, installed, b"port = 2\n", "2", replay)
    _refused(a, "refused", "version")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


def test_rolled_back_snapshot_is_refused(api, ctx, installed, device_root):
    def old_snapshot(_rel):
        md = _timestamp(ctx, "director")
        md.signed.snapshot_meta.version = 1  # a validly signed timestamp naming an old snapshot
        md.signed.version += 1
        md.sign(ctx.tuf.keyring.signer("timestamp"))
        _put(ctx, "director", "timestamp", md)

    a = _attempt(api, installed, b"port = 2\n", "2", old_snapshot)
    _refused(a, "refused", "snapshot")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


def test_expired_timestamp_is_refused(api, ctx, clock, installed, device_root):
    def freeze(_rel):
        md = _timestamp(ctx)
        md.signed.expires = clock.now - timedelta(hours=1)
        md.signed.version += 1
        md.sign(ctx.tuf.keyring.signer("timestamp"))
        _put(ctx, "image", "timestamp", md)

    a = _attempt(api, installed, b"port = 2\n", "2", freeze)
    _refused(a, "refused", "Expired")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


# -- U5: mix-and-match --------------------------------------------------------------------------
def test_bin_from_another_version_is_refused(api, ctx, installed, device_root):
    def mix(rel):
        path = f"artifacts/{rel['artifacts'][0]['id']}/app-conf-2"
        role = ctx.tuf.image.bin_for(path)
        newest = _newest(ctx, "image", role)
        with ctx.db.write() as s:  # serve an older bin's content under the newest version
            older = s.execute(
                select(TufMetadata.data).where(
                    TufMetadata.repo == "image",
                    TufMetadata.role == role,
                    TufMetadata.version == newest.version - 1,
                )
            ).scalar_one()
            s.execute(
                update(TufMetadata)
                .where(
                    TufMetadata.repo == "image",
                    TufMetadata.role == role,
                    TufMetadata.version == newest.version,
                )
                .values(data=older)
            )

    a = _attempt(api, installed, b"port = 2\n", "2", mix)
    _refused(a, "refused")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


# -- U6: keys -----------------------------------------------------------------------------------
def test_timestamp_signed_by_an_unauthorized_key_is_refused(api, ctx, installed, device_root):
    def rogue(_rel):
        md = _timestamp(ctx)
        md.signed.version += 1
        md.sign(CryptoSigner.generate_ed25519(), append=False)
        _put(ctx, "image", "timestamp", md)

    a = _attempt(api, installed, b"port = 2\n", "2", rogue)
    _refused(a, "refused", "Unsigned")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


def test_root_below_threshold_is_refused(api, ctx, settings, installed, device_root):
    def weak_root(_rel):
        root_dir = settings.data_dir / "tuf/root"
        (old,) = load_root_keys(root_dir, read_passphrase(root_dir))
        current = Metadata[Root].from_bytes(_newest(ctx, "image", "root").data)
        new_a, new_b = CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519()
        md = Metadata(Root.from_dict(current.signed.to_dict()))
        md.signed.version += 1
        for keyid in list(md.signed.roles["root"].keyids):
            md.signed.revoke_key(keyid, "root")
        md.signed.add_key(new_a.public_key, "root")
        md.signed.add_key(new_b.public_key, "root")
        md.signed.roles["root"].threshold = 2
        md.sign(old, append=True)
        md.sign(new_a, append=True)  # one of the two new keys: below the new threshold
        _put(ctx, "image", "root", md)

    a = _attempt(api, installed, b"port = 2\n", "2", weak_root)
    _refused(a, "refused", "root was signed by 1/2 keys")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


def test_key_rotation_is_followed_and_the_old_key_is_then_refused(
    api, ctx, clock, settings, installed, device_root
):
    old_timestamp_key = ctx.tuf.keyring.signer("timestamp")
    root_dir = settings.data_dir / "tuf/root"
    ctx.tuf.rotate(
        "timestamp", clock.now, root_dir=root_dir, root_passphrase=read_passphrase(root_dir)
    )
    a = _attempt(api, installed, b"port = 2\n", "2")
    assert a["state"] == "succeeded", a  # the agent walked to root v2 and trusts the new key
    assert (device_root / "etc/app.conf").read_bytes() == b"port = 2\n"

    def old_key(_rel):
        md = _timestamp(ctx)
        md.signed.version += 1
        md.sign(old_timestamp_key, append=False)
        _put(ctx, "image", "timestamp", md)

    a = _attempt(api, installed, b"port = 3\n", "3", old_key)
    _refused(a, "refused", "Unsigned")
    assert (device_root / "etc/app.conf").read_bytes() == b"port = 2\n"


# -- U12: Uptane: other device, downgrade ---------------------------------------------------------
def test_assignment_the_director_did_not_sign_is_refused(api, ctx, clock, installed, device_root):
    """A database attacker inserts an assignment; no director entry exists for it."""
    rel = _release(api, b"port = 2\n", "2")
    dev = api.get("/api/v1/devices").json()["items"][0]
    with ctx.db.engine.begin() as conn:  # behind the server's back: nothing gets signed
        aid = conn.execute(
            insert(Assignment).values(
                device_id=dev["id"],
                release_id=rel["id"],
                state="pending",
                detail="",
                created_at=clock.now,
                updated_at=clock.now,
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(AssignmentEvent).values(assignment_id=aid, at=clock.now, state="pending")
        )
        conn.execute(
            update(Device)
            .where(Device.id == dev["id"])
            .values(latest_assignment_id=aid, latest_assignment_state="pending", rev=Device.rev + 1)
        )
    drive(installed)
    _refused(_latest_assignment(api), "director has not assigned this artifact to this device")
    assert (device_root / "etc/app.conf").read_bytes() == GOOD


def test_downgrade_by_the_director_is_refused_until_the_image_repo_withdraws(
    api, ctx, installed, device_root
):
    a = _attempt(api, installed, b"port = 2\n", "2")
    assert a["state"] == "succeeded"
    v1 = api.get("/api/v1/releases").json()
    v1_id = next(r["id"] for r in v1 if r["version"] == "1")
    deploy(api, v1_id, selector="lab=true", force=True)  # the director signs app 1 again
    drive(installed)
    _refused(_latest_assignment(api), "downgrade")
    assert (device_root / "etc/app.conf").read_bytes() == b"port = 2\n"
