"""The A/B image installer on file-backed slots with the ``file`` boot loader; "reboot" is the
boot loader's choice (``core.ab.boot``) written to the kernel command line the agent reads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fleetwarden.agent.boot import FileBootloader
from fleetwarden.agent.installers import InstallContext
from fleetwarden.agent.installers.image import ImageInstaller
from fleetwarden.core import ab
from fleetwarden.core.ab import SlotState
from fleetwarden.core.delta import DeltaSpec, make_delta
from fleetwarden.errors import InstallError
from tests.agent.bundles import install_context

SLOTS = ("A", "B")


class Device:
    """Two slot files, a boot environment file and a kernel command line."""

    def __init__(self, tmp_path: Path, image: bytes) -> None:
        self.dir = tmp_path
        self.slots = {s: tmp_path / f"slot-{s}.img" for s in SLOTS}
        self.slots["A"].write_bytes(image)
        self.slots["B"].write_bytes(b"")
        self.cmdline = tmp_path / "cmdline"
        self.cmdline.write_text("fleetwarden.slot=A\n")
        self.boot = FileBootloader(SLOTS, tmp_path / "bootenv.json", self.cmdline)
        self.installer = ImageInstaller(self.boot, self.slots)

    def reboot(self) -> str:
        slot, env = ab.boot(self.boot.read())
        self.boot.write(env)
        self.cmdline.write_text(f"fleetwarden.slot={slot}\n")
        return slot

    def ctx(self, payload: bytes, meta: dict[str, str] | None = None, sha: str | None = None):
        path = self.dir / "payload"
        path.write_bytes(payload)
        work = self.dir / "work"
        work.mkdir(exist_ok=True)
        return install_context(work, path, "image", meta=meta, sha256=sha)


V1 = os.urandom(64 * 1024) + bytes(192 * 1024)
V2 = bytearray(V1)
V2[5000:5100] = os.urandom(100)
V2 = bytes(V2) + os.urandom(4096)


def test_update_writes_the_inactive_slot_and_commits_after_a_healthy_boot(tmp_path):
    dev = Device(tmp_path, V1)
    ctx = dev.ctx(V2)
    dev.installer.preflight(ctx)
    snap = dict(dev.installer.prepare(ctx))
    assert snap == {"target": "B", "previous": "A"}
    assert dev.installer.install(ctx, snap).needs_reboot
    assert dev.slots["B"].read_bytes() == V2
    assert dev.boot.read().order[0] == "B"
    assert dev.reboot() == "B"
    dev.installer.verify_boot(ctx, snap)
    dev.installer.commit(ctx, snap)
    assert dev.boot.read().state("B") is SlotState.GOOD
    assert [dev.reboot() for _ in range(5)] == ["B"] * 5


def test_a_slot_that_never_comes_up_falls_back_and_is_reported(tmp_path):
    dev = Device(tmp_path, V1)
    ctx = dev.ctx(V2)
    snap = dict(dev.installer.prepare(ctx))
    dev.installer.install(ctx, snap)
    assert [dev.reboot() for _ in range(4)] == ["B", "B", "B", "A"]  # crashes, then fallback
    with pytest.raises(InstallError, match="fell back to slot A"):
        dev.installer.verify_boot(ctx, snap)
    assert not dev.installer.rollback(ctx, snap).needs_reboot
    assert dev.boot.read().state("B") is SlotState.BAD


def test_failed_health_check_rolls_back_with_a_reboot(tmp_path):
    dev = Device(tmp_path, V1)
    ctx = dev.ctx(V2)
    snap = dict(dev.installer.prepare(ctx))
    dev.installer.install(ctx, snap)
    assert dev.reboot() == "B"
    assert dev.installer.rollback(ctx, snap).needs_reboot
    assert dev.reboot() == "A"
    assert not dev.installer.rollback(ctx, snap).needs_reboot  # idempotent once back


def test_a_hash_mismatch_leaves_the_slot_bad_and_inactive(tmp_path):
    dev = Device(tmp_path, V1)
    ctx = dev.ctx(V2, sha="0" * 64)
    snap = dict(dev.installer.prepare(ctx))
    with pytest.raises(InstallError, match="expected 0000"):
        dev.installer.install(ctx, snap)
    env = dev.boot.read()
    assert env.state("B") is SlotState.BAD
    assert dev.reboot() == "A"


def _delta_meta(base: bytes, image: bytes) -> dict[str, str]:
    return DeltaSpec(
        hashlib.sha256(base).hexdigest(),
        len(base),
        hashlib.sha256(image).hexdigest(),
        len(image),
    ).to_meta()


def test_a_delta_rebuilds_the_image_from_the_running_slot(tmp_path):
    dev = Device(tmp_path, V1)
    delta = make_delta(V1, V2)
    assert len(delta) < len(V2) // 10
    ctx = dev.ctx(delta, _delta_meta(V1, V2))
    dev.installer.preflight(ctx)
    snap = dict(dev.installer.prepare(ctx))
    dev.installer.install(ctx, snap)
    assert dev.slots["B"].read_bytes() == V2


@pytest.mark.parametrize("damage", ["corrupt", "wrong-base", "truncated"])
def test_a_bad_delta_is_refused_before_anything_is_written(tmp_path, damage):
    dev = Device(tmp_path, V1)
    dev.slots["B"].write_bytes(b"old contents of B")
    delta = bytearray(make_delta(V1, V2))
    meta = _delta_meta(V1, V2)
    if damage == "corrupt":
        delta[len(delta) // 2] ^= 0xFF
    elif damage == "wrong-base":
        meta = _delta_meta(V1[:-1] + b"x", V2)
    else:
        delta = delta[: len(delta) // 2]
    ctx = dev.ctx(bytes(delta), meta)
    env_before = dev.boot.read()
    with pytest.raises(InstallError, match="delta refused"):
        dev.installer.preflight(ctx)
    snap = dict(dev.installer.prepare(ctx))
    with pytest.raises(InstallError, match="delta refused"):
        dev.installer.install(ctx, snap)
    assert dev.slots["B"].read_bytes() == b"old contents of B"
    assert dev.reboot() == "A"
    assert env_before.order[0] == "A"


def test_more_than_one_image_is_refused(tmp_path):
    dev = Device(tmp_path, V1)
    ctx = dev.ctx(V2)
    two = InstallContext(
        assignment_id=1,
        release="os@2",
        payloads=[ctx.payloads[0], ctx.payloads[0]],
        workdir=ctx.workdir,
        state_dir=ctx.state_dir,
        root=ctx.root,
    )
    with pytest.raises(InstallError, match="one image, not 2"):
        dev.installer.preflight(two)
