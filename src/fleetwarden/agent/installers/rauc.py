"""``raucb`` artifacts: RAUC bundles, installed by the device's own RAUC service.

For devices built around RAUC: the agent verifies and downloads the bundle as any artifact
(TUF), checks it with ``rauc info`` (RAUC's own signature and compatible checks) and hands it
to ``rauc install``, which writes the inactive slot group and makes it primary through the
device's boot loader backend (our ``file`` environment via
``fleetwarden.agent.boot.rauc_backend``, or any RAUC backend). RAUC's states map to ours:

- after the reboot, ``booted`` is still the previous slot: the boot loader fell back, the
  update is ``rolled_back`` with that reason;
- healthy: ``rauc status mark-good`` commits the new slot;
- unhealthy: ``rauc status mark-bad booted`` and ``mark-active other``, then a reboot back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetwarden.agent.installers.base import InstallContext, Installer, InstallResult, run_command
from fleetwarden.errors import InstallError

__all__ = ["RaucInstaller"]


class RaucInstaller(Installer):
    type = "raucb"

    def __init__(self, *, conf: Path | None = None, binary: str = "rauc") -> None:
        self.conf = conf
        self.binary = binary

    def _rauc(self, *args: str, what: str) -> str:
        conf = [f"--conf={self.conf}"] if self.conf is not None else []
        # rauc's D-Bus clients wait for the service; only an install may take long.
        timeout = 3600 if args[0] == "install" else 120
        return run_command([self.binary, *conf, *args], what=what, timeout=timeout)

    def _status(self) -> dict[str, Any]:
        out = self._rauc("status", "--output-format=json", what="rauc status")
        try:
            status: dict[str, Any] = json.loads(out)
        except ValueError as e:
            raise InstallError(f"rauc status printed no JSON: {out[:200]!r}") from e
        return status

    def _booted(self) -> str:
        booted = self._status().get("booted")
        if not booted:
            raise InstallError("rauc status names no booted slot")
        return str(booted)

    def preflight(self, ctx: InstallContext) -> None:
        compatible = self._status().get("compatible")
        for p in ctx.payloads:
            out = self._rauc(
                "info", "--output-format=json", str(p.path), what=f"rauc info of {p.ref.name}"
            )
            try:
                bundle = json.loads(out)
            except ValueError as e:
                raise InstallError(f"rauc info printed no JSON for {p.ref.name}") from e
            if bundle.get("compatible") != compatible:
                raise InstallError(
                    f"bundle {p.ref.name} is for {bundle.get('compatible')!r}, "
                    f"this device is {compatible!r}"
                )

    def prepare(self, ctx: InstallContext) -> Mapping[str, Any]:
        return {"previous": self._booted()}

    def install(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult:
        for p in ctx.payloads:
            self._rauc("install", str(p.path), what=f"rauc install of {p.ref.name}")
        return InstallResult(needs_reboot=True)

    def verify_boot(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        booted = self._booted()
        if booted == snapshot["previous"]:
            raise InstallError(
                f"the boot loader fell back to slot {booted}: the new slot did not boot"
            )

    def commit(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        self._rauc("status", "mark-good", "booted", what="rauc status mark-good")

    def rollback(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult:
        if self._booted() == snapshot["previous"]:
            # Still on the old slot (install failed, or the boot loader fell back).
            self._rauc("status", "mark-bad", "other", what="rauc status mark-bad other")
            return InstallResult(needs_reboot=False)
        self._rauc("status", "mark-bad", "booted", what="rauc status mark-bad booted")
        self._rauc("status", "mark-active", "other", what="rauc status mark-active other")
        return InstallResult(needs_reboot=True)
