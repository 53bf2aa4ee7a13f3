"""Boot loader backends: each round-trips the boot environment through its real tool
(grub-editenv from grub-common, fw_printenv/fw_setenv from libubootenv-tool on a file), and
the variables its boot script reads say what the model says."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwarden.agent.boot import (
    EfiBootloader,
    FileBootloader,
    GrubBootloader,
    UBootBootloader,
    booted_from_cmdline,
)
from fleetwarden.agent.boot.file import load_env
from fleetwarden.core import ab
from fleetwarden.core.ab import BootEnv
from fleetwarden.errors import InstallError
from tests.conftest import require_tool

SLOTS = ("A", "B")


def _cmdline(tmp_path: Path, slot: str) -> Path:
    p = tmp_path / "cmdline"
    p.write_text(f"root=/dev/sda2 ro quiet fleetwarden.slot={slot}\n")
    return p


def _envs() -> list[BootEnv]:
    """The environments an update passes through, start to commit and rollback."""
    e0 = BootEnv.fresh(SLOTS, "A")
    e1 = ab.begin_write(e0, "B")
    e2 = ab.activate(e1, "B", 3)
    _, e3 = ab.boot(e2)
    e4 = ab.commit(e3, "B", "B")
    e5 = ab.rollback(e3, "B", "A", "B").env
    return [e0, e1, e2, e3, e4, e5]


def _round_trip(boot) -> None:
    for env in _envs():
        boot.write(env)
        assert boot.read() == env


def test_file_backend_round_trips_and_starts_fresh(tmp_path):
    boot = FileBootloader(SLOTS, tmp_path / "bootenv.json", _cmdline(tmp_path, "A"))
    assert boot.read() == BootEnv.fresh(SLOTS, "A")
    _round_trip(boot)


def test_grub_backend_with_grub_editenv(tmp_path):
    require_tool("grub-editenv")
    boot = GrubBootloader(SLOTS, tmp_path / "grubenv", _cmdline(tmp_path, "A"))
    assert boot.read() == BootEnv.fresh(SLOTS, "A")
    _round_trip(boot)
    boot.write(ab.activate(ab.begin_write(BootEnv.fresh(SLOTS, "A"), "B"), "B"))
    listed = subprocess.run(
        ["grub-editenv", str(tmp_path / "grubenv"), "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    # RAUC's grub.conf variables: B first, both bootable, neither tried yet.
    assert {"ORDER=B A", "A_OK=1", "A_TRY=0", "B_OK=1", "B_TRY=0", "B_STATE=trying"} <= set(listed)


def test_uboot_backend_with_fw_setenv_on_a_file(tmp_path):
    require_tool("fw_printenv", "fw_setenv")
    env_file = tmp_path / "uboot.env"
    env_file.write_bytes(bytes(0x4000))  # never written: bad CRC
    config = tmp_path / "fw_env.config"
    config.write_text(f"{env_file} 0x0000 0x4000\n")
    boot = UBootBootloader(SLOTS, config, _cmdline(tmp_path, "A"))
    assert boot.read() == BootEnv.fresh(SLOTS, "A")
    _round_trip(boot)
    boot.write(ab.activate(ab.begin_write(BootEnv.fresh(SLOTS, "A"), "B"), "B", 3))
    printed = subprocess.run(
        ["fw_printenv", "-c", str(config)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert {
        "BOOT_ORDER=B A",
        "BOOT_B_LEFT=3",
        "upgrade_available=1",
        "bootcount=0",
        "bootlimit=3",
    } <= set(printed)
    boot.write(ab.commit(boot.read(), "B", "B"))
    printed = subprocess.run(
        ["fw_printenv", "-c", str(config)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert "upgrade_available=0" in printed


def test_efi_backend_drives_efibootmgr(tmp_path):
    """No EFI variables in a container: a stand-in efibootmgr records its arguments and
    answers BootCurrent, the one seam faked here."""
    log = tmp_path / "efibootmgr.log"
    tool = tmp_path / "efibootmgr"
    tool.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\necho "BootCurrent: 0001"\necho "BootOrder: 0001,0002"\n'
    )
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    boot = EfiBootloader(SLOTS, {"A": "0001", "B": "0002"}, tmp_path / "efi.json", str(tool))
    assert boot.booted() == "A"
    assert boot.read() == BootEnv.fresh(SLOTS, "A")
    boot.write(ab.activate(ab.begin_write(boot.read(), "B"), "B"))
    boot.write(ab.commit(boot.read(), "B", "B"))
    calls = log.read_text().splitlines()
    assert "--bootorder 0001 --bootnext 0002" in calls  # trial: a one-shot boot of B
    assert "--bootorder 0002,0001" in calls  # committed: B first for good
    with pytest.raises(InstallError, match="no boot entry configured"):
        EfiBootloader(SLOTS, {"A": "0001"}, tmp_path / "x.json", str(tool))


def test_booted_slot_comes_from_the_kernel_command_line(tmp_path):
    p = tmp_path / "cmdline"
    p.write_text("quiet rauc.slot=B\n")
    assert booted_from_cmdline(p, SLOTS) == "B"
    p.write_text("quiet fleetwarden.slot=C\n")
    with pytest.raises(InstallError, match="names no configured slot"):
        booted_from_cmdline(p, SLOTS)
    p.write_text("quiet\n")
    with pytest.raises(InstallError, match="names no slot"):
        booted_from_cmdline(p, SLOTS)
    with pytest.raises(InstallError, match="cannot read"):
        booted_from_cmdline(tmp_path / "missing", SLOTS)


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_a_damaged_file_environment_is_refused_by_name(data):
    error = None
    try:
        env = load_env(data, SLOTS, what="bootenv.json")
    except InstallError as e:
        error = str(e)
    if error is None:
        assert set(env.order) <= set(SLOTS)
    else:
        assert "bootenv.json" in error


def test_file_backend_writes_atomically(tmp_path):
    boot = FileBootloader(SLOTS, tmp_path / "bootenv.json", _cmdline(tmp_path, "A"))
    boot.write(BootEnv.fresh(SLOTS, "A"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert (tmp_path / "bootenv.json").stat().st_size > 0
