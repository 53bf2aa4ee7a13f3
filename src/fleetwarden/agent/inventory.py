"""What the device is: OS, kernel, hardware, packages, firmware, site and labels."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import socket
import subprocess
from pathlib import Path

import fleetwarden
from fleetwarden.agent.config import AgentConfig
from fleetwarden.agent.installers.deb import installed_packages
from fleetwarden.errors import FleetwardenError
from fleetwarden.protocol.device import FirmwareComponent, Inventory, Package, SlotReport

log = logging.getLogger("fleetwarden.agent.inventory")

__all__ = ["SystemInventory", "read_os_release"]


def read_os_release(root: Path) -> dict[str, str]:
    for candidate in (root / "etc/os-release", root / "usr/lib/os-release"):
        try:
            text = candidate.read_text()
        except OSError:
            continue
        values = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                values[key.strip()] = value.strip().strip('"').strip("'")
        return values
    return {}


def _hardware_model() -> str:
    for path in ("/sys/class/dmi/id/product_name", "/proc/device-tree/model"):
        try:
            return Path(path).read_text().strip("\x00\n ")[:256]
        except OSError:
            continue
    return ""


def _firmware() -> list[FirmwareComponent]:
    """Firmware components from fwupd, when it is installed and answering."""
    tool = shutil.which("fwupdmgr")
    if tool is None:
        return []
    try:
        out = subprocess.run(
            [tool, "get-devices", "--json", "--no-unreported-check"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        devices = json.loads(out.stdout or "{}").get("Devices", [])
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError):
        return []
    parts = []
    for d in devices:
        if not isinstance(d, dict) or not d.get("Version"):
            continue
        parts.append(
            FirmwareComponent(
                name=str(d.get("Name", ""))[:256],
                version=str(d["Version"])[:256],
                vendor=str(d.get("Vendor", ""))[:256],
                device_id=str(d.get("DeviceId", ""))[:256],
                guids=[str(g)[:256] for g in d.get("Guid", [])][:64],
                plugin=str(d.get("Plugin", ""))[:256],
            )
        )
    return parts


class SystemInventory:
    def __init__(self, config: AgentConfig, *, installed_release: str = "") -> None:
        self.config = config
        self.installed_release = installed_release

    def collect(self) -> Inventory:
        c = self.config
        osr = read_os_release(c.root)
        packages = (
            [Package(name=n, version=v, arch=a) for n, v, a in installed_packages(c.root)]
            if c.collect_packages
            else []
        )
        return Inventory(
            hostname=c.hostname or socket.gethostname(),
            os_name=osr.get("ID", platform.system().lower()),
            os_version=osr.get("VERSION_ID", ""),
            kernel=platform.release(),
            arch=platform.machine(),
            hardware_model=c.hardware_model if c.hardware_model is not None else _hardware_model(),
            agent_version=fleetwarden.__version__,
            site=c.site,
            zone=c.zone,
            labels=c.labels,
            installed_release=self.installed_release,
            packages=packages,
            firmware=_firmware() if c.collect_firmware else [],
            slots=_slots(c),
        )


def _slots(c: AgentConfig) -> list[SlotReport]:
    """The A/B slots as the boot environment has them; none if the device has no slots or
    the environment cannot be read now (logged: inventory must not fail over it)."""
    if c.ab is None:
        return []
    from fleetwarden.agent.boot import make_bootloader

    boot = make_bootloader(c.ab, c.data_dir)
    try:
        env, booted = boot.read(), boot.booted()
    except FleetwardenError as e:
        log.warning("cannot read the A/B boot environment for inventory: %s", e)
        return []
    return [
        SlotReport(
            name=s,
            state=env.state(s).value,
            attempts_left=env.attempts_left(s),
            booted=s == booted,
            primary=bool(env.order) and env.order[0] == s,
        )
        for s in env.slots
    ]
