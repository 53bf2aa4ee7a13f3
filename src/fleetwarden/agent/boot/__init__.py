"""Boot loader backends for A/B updates, behind one interface (``base.Bootloader``)."""

from __future__ import annotations

from pathlib import Path

from fleetwarden.agent.boot.base import Bootloader, booted_from_cmdline
from fleetwarden.agent.boot.efi import EfiBootloader
from fleetwarden.agent.boot.file import FileBootloader
from fleetwarden.agent.boot.grub import GrubBootloader
from fleetwarden.agent.boot.uboot import UBootBootloader
from fleetwarden.agent.config import AbConfig

__all__ = [
    "Bootloader",
    "EfiBootloader",
    "FileBootloader",
    "GrubBootloader",
    "UBootBootloader",
    "booted_from_cmdline",
    "make_bootloader",
]


def make_bootloader(ab: AbConfig, data_dir: Path) -> Bootloader:
    """The backend an agent configuration names, with its defaults filled in."""
    slots = tuple(sorted(ab.slots))
    if ab.bootloader == "file":
        return FileBootloader(slots, ab.env_file or data_dir / "bootenv.json", ab.cmdline)
    if ab.bootloader == "grub":
        return GrubBootloader(slots, ab.env_file or Path("/boot/grub/grubenv"), ab.cmdline)
    if ab.bootloader == "uboot":
        return UBootBootloader(slots, ab.env_file or Path("/etc/fw_env.config"), ab.cmdline)
    return EfiBootloader(slots, ab.efi_entries, ab.env_file or data_dir / "efi-slots.json")
