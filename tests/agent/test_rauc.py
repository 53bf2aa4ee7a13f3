"""The RAUC installer against Debian's real RAUC (1.8): a private D-Bus system bus, ``rauc
service`` with file-backed raw slots and our ``file`` boot environment as RAUC's custom
boot loader backend; a "reboot" restarts the service on the slot the environment boots."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetwarden.agent.boot.file import dump_env, load_env
from fleetwarden.agent.installers import InstallContext
from fleetwarden.agent.installers.rauc import RaucInstaller
from fleetwarden.core import ab
from fleetwarden.core.ab import BootEnv, SlotState
from fleetwarden.errors import InstallError
from tests.agent.bundles import install_context, self_signed
from tests.conftest import require_tool

COMPATIBLE = "fleetwarden-test"

_BUS = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_type="method_call"/>
    <allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def _bundle(d: Path, image: bytes, key: Path, cert: Path, compatible: str = COMPATIBLE) -> Path:
    content = d / f"content-{hashlib.sha256(image).hexdigest()[:8]}"
    content.mkdir()
    (content / "rootfs.img").write_bytes(image)
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={compatible}\nversion=2\n\n[image.rootfs]\nfilename=rootfs.img\n"
    )
    out = d / f"{content.name}.raucb"
    subprocess.run(
        ["rauc", "bundle", f"--cert={cert}", f"--key={key}", f"--keyring={cert}",
         str(content), str(out)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return out


class RaucDevice:
    def __init__(self, d: Path) -> None:
        self.d = d
        self.key, self.cert = self_signed(d, "vendor")
        self.env_file, self.cmdline = d / "bootenv.json", d / "cmdline"
        self.slots = {"A": d / "slotA.img", "B": d / "slotB.img"}
        self.slots["A"].write_bytes(b"factory image" * 1000)
        self.slots["B"].write_bytes(b"")
        self.env_file.write_bytes(dump_env(BootEnv.fresh(("A", "B"), "A")))
        self.cmdline.write_text("quiet rauc.slot=A\n")
        backend = d / "backend.sh"
        backend.write_text(
            f"#!/bin/sh\nexec {sys.executable} -m fleetwarden.agent.boot.rauc_backend "
            f'--env {self.env_file} --cmdline {self.cmdline} "$@"\n'
        )
        backend.chmod(0o755)
        self.conf = d / "system.conf"
        self.conf.write_text(
            f"[system]\ncompatible={COMPATIBLE}\nbootloader=custom\ndata-directory={d / 'data'}\n\n"
            f"[handlers]\nbootloader-custom-backend={backend}\n\n"
            f"[keyring]\npath={self.cert}\n\n"
            f"[slot.rootfs.0]\ndevice={self.slots['A']}\ntype=raw\nbootname=A\n\n"
            f"[slot.rootfs.1]\ndevice={self.slots['B']}\ntype=raw\nbootname=B\n"
        )
        sock = d / "bus.sock"
        (d / "bus.conf").write_text(_BUS.format(sock=sock))
        self.bus = subprocess.Popen(
            ["dbus-daemon", "--nofork", f"--config-file={d / 'bus.conf'}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={sock}"
        self.service: subprocess.Popen[bytes] | None = None
        self.boot_service("A")

    def boot_service(self, slot: str) -> None:
        if self.service is not None:
            self.service.send_signal(signal.SIGTERM)
            self.service.wait(10)
        self.cmdline.write_text(f"quiet rauc.slot={slot}\n")
        self.service = subprocess.Popen(
            ["rauc", "service", f"--conf={self.conf}", f"--override-boot-slot={slot}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # ``rauc status`` blocks while the service is not on the bus: ask the bus instead.
        for _ in range(200):
            r = subprocess.run(
                ["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
                 "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner",
                 "string:de.pengutronix.rauc"],
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            )  # fmt: skip
            if "boolean true" in r.stdout:
                return
            time.sleep(0.05)
        raise AssertionError("rauc service did not come up")

    def reboot(self) -> str:
        slot, env = ab.boot(self.env())
        self.env_file.write_bytes(dump_env(env))
        self.boot_service(slot)
        return slot

    def env(self) -> BootEnv:
        return load_env(self.env_file.read_bytes(), ("A", "B"), what="rig")

    def close(self) -> None:
        for p in (self.service, self.bus):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)
        os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)


@pytest.fixture
def device(tmp_path) -> Iterator[RaucDevice]:
    require_tool("rauc", "mksquashfs", "dbus-daemon", "dbus-send", "openssl")
    dev = RaucDevice(tmp_path)
    try:
        yield dev
    finally:
        dev.close()


def _ctx(d: Path, bundle: Path) -> InstallContext:
    return install_context(d, bundle, "raucb")


def test_rauc_installs_the_other_slot_and_commits_after_reboot(device):
    image = os.urandom(64 * 1024)
    ctx = _ctx(device.d, _bundle(device.d, image, device.key, device.cert))
    rauc = RaucInstaller(conf=device.conf)
    rauc.preflight(ctx)
    snap = dict(rauc.prepare(ctx))
    assert snap == {"previous": "A"}
    assert rauc.install(ctx, snap).needs_reboot
    assert device.slots["B"].read_bytes()[: len(image)] == image
    env = device.env()
    assert env.order[0] == "B"
    assert env.state("B") is SlotState.TRYING  # RAUC marked it bad, wrote, then primary
    assert device.reboot() == "B"
    rauc.verify_boot(ctx, snap)
    rauc.commit(ctx, snap)
    assert device.env().state("B") is SlotState.GOOD
    assert [device.reboot() for _ in range(2)] == ["B", "B"]


def test_unhealthy_new_slot_is_marked_bad_and_the_old_one_booted(device):
    ctx = _ctx(device.d, _bundle(device.d, os.urandom(4096), device.key, device.cert))
    rauc = RaucInstaller(conf=device.conf)
    snap = dict(rauc.prepare(ctx))
    rauc.install(ctx, snap)
    assert device.reboot() == "B"
    assert rauc.rollback(ctx, snap).needs_reboot
    assert device.env().state("B") is SlotState.BAD
    assert device.reboot() == "A"
    assert not rauc.rollback(ctx, snap).needs_reboot


def test_a_slot_that_never_boots_is_reported_as_a_fallback(device):
    ctx = _ctx(device.d, _bundle(device.d, os.urandom(4096), device.key, device.cert))
    rauc = RaucInstaller(conf=device.conf)
    snap = dict(rauc.prepare(ctx))
    rauc.install(ctx, snap)
    env = device.env()
    for _ in range(3):  # B crashes three times; the boot loader falls back by itself
        _, env = ab.boot(env)
    device.env_file.write_bytes(dump_env(env))
    assert device.reboot() == "A"
    with pytest.raises(InstallError, match="fell back to slot A"):
        rauc.verify_boot(ctx, snap)


def test_foreign_signatures_and_other_devices_bundles_are_refused(device):
    other_key, other_cert = self_signed(device.d, "intruder")
    rauc = RaucInstaller(conf=device.conf)
    foreign = _ctx(device.d, _bundle(device.d, b"x" * 4096, other_key, other_cert))
    with pytest.raises(InstallError, match="rauc info of os failed"):
        rauc.preflight(foreign)
    wrong = _ctx(device.d, _bundle(device.d, b"y" * 4096, device.key, device.cert, "other-box"))
    with pytest.raises(InstallError, match="is for 'other-box'"):
        rauc.preflight(wrong)
    assert device.slots["B"].read_bytes() == b""
