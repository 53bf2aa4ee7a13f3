"""Agent configuration: a TOML file, ``FLEETWARDEN_AGENT_*`` environment, and CLI flags."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleetwarden.errors import ConfigError
from fleetwarden.protocol.device import HealthCheck

__all__ = ["AgentConfig"]


class AbConfig(BaseModel):
    """Whole-image A/B updates: the slots and the boot loader that chooses between them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootloader: Literal["file", "grub", "uboot", "efi"]
    #: Slot name → block device (or file), e.g. ``{A = "/dev/mmcblk0p2", B = "/dev/mmcblk0p3"}``.
    slots: dict[str, Path] = Field(min_length=2, max_length=2)
    #: The boot environment: the JSON file (file), grubenv (grub), fw_env.config (uboot), or
    #: the state file kept beside the EFI variables (efi).
    env_file: Path | None = None
    #: UEFI boot entry per slot (efi only), e.g. ``{A = "0001", B = "0002"}``.
    efi_entries: dict[str, str] = Field(default_factory=dict)
    #: Where the running slot is read from (``fleetwarden.slot=`` or ``rauc.slot=``).
    cmdline: Path = Path("/proc/cmdline")
    #: Boots a new slot gets before the boot loader falls back.
    attempts: int = Field(3, ge=1, le=10)
    #: Cap on the slot write rate, bytes per second (default: none).
    write_rate_limit: float | None = Field(None, gt=0)


class SwupdateConfig(BaseModel):
    """Devices that install SWUpdate bundles (``swu`` artifacts) with their own swupdate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Certificate that signs the bundles' sw-description (``swupdate -k``).
    public_key: Path
    #: Extra arguments, e.g. ``["-e", "stable,copy2"]`` to choose the inactive copy.
    extra_args: list[str] = Field(default_factory=list)
    #: Reboot after a successful install (the new copy is booted and health-checked).
    reboot: bool = True


class RaucConfig(BaseModel):
    """Devices that install RAUC bundles (``raucb`` artifacts) through their RAUC service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: RAUC's system.conf (default: RAUC's own default, /etc/rauc/system.conf).
    conf: Path | None = None


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    server: str = Field(
        description="Base URL of the control plane, e.g. https://fleet.example:8443"
    )
    data_dir: Path = Path("/var/lib/fleetwarden-agent")
    #: Needed only for the first start; afterwards the device certificate is the identity.
    enroll_token: str | None = None
    #: CA bundle that signs the server's TLS certificate (default: the system store).
    server_ca_file: Path | None = None

    hostname: str | None = None
    site: str = ""
    zone: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    hardware_model: str | None = None

    #: Override the server's poll interval (seconds); mainly for labs and tests.
    poll_interval: float | None = Field(None, gt=0)
    jitter: float = Field(0.1, ge=0, le=0.5)
    #: Renew the device certificate when less than this share of its lifetime remains.
    renew_fraction: float = Field(1 / 3, gt=0, lt=1)
    #: How often to re-collect inventory (it is only sent when it changed).
    inventory_interval: float = Field(3600, gt=0)

    #: Root of the filesystem that `file` artifacts and dpkg act on ("/" on a real device).
    root: Path = Path("/")
    #: Health checks run after every install, in addition to the release's own.
    health_checks: list[HealthCheck] = Field(default_factory=list)
    #: Cap on download speed, bytes per second (default: none). Downloads resume where they
    #: stopped after a restart or reboot (HTTP Range on the journalled partial file).
    download_rate_limit: float | None = Field(None, gt=0)
    #: After an install's reboot, roll back unless the server was reached within this many
    #: seconds (the "agent reached the server" health check).
    reach_server_within: float = Field(900, gt=0)
    #: A/B slots for whole-image updates (``image`` artifacts); unset: no image installer.
    ab: AbConfig | None = None
    #: SWUpdate bundles (``swu`` artifacts); unset: no swu installer.
    swupdate: SwupdateConfig | None = None
    #: RAUC bundles (``raucb`` artifacts); unset: no raucb installer.
    rauc: RaucConfig | None = None
    #: Command that reboots the device when an installer needs it.
    reboot_command: list[str] = Field(default_factory=lambda: ["systemctl", "reboot"])
    #: Between updates, become the lean idle poller (fleetwarden.agent.lean) to save memory.
    lean_idle: bool = True
    collect_packages: bool = True
    collect_firmware: bool = True

    #: Diagnostics for crash-safety tests: after journalling this step, stop and wait to be
    #: killed. Never set it on a real device.
    hold_at_step: str | None = None

    @classmethod
    def load(cls, file: Path | None = None, **overrides: Any) -> AgentConfig:
        """Raises ``ConfigError`` naming the bad file or value."""
        data: dict[str, Any] = {}
        if file is not None:
            try:
                data = tomllib.loads(file.read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise ConfigError(f"cannot read agent configuration {file}: {e}") from e
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise ConfigError(f"invalid agent configuration: {problems}") from e
