"""The ``uboot`` backend: the U-Boot environment, through ``fw_printenv``/``fw_setenv`` from
libubootenv (``-c`` names an ``fw_env.config``; tests point it at a plain file).

Variables: RAUC's U-Boot scheme (``BOOT_ORDER``, ``BOOT_<slot>_LEFT``), plus
``BOOT_<slot>_STATE`` and the standard boot-count trio: ``upgrade_available=1`` while a slot is
on trial, ``bootcount=0`` when one is activated, ``bootlimit`` = its attempts (U-Boot runs
``altbootcmd`` once ``bootcount`` exceeds it). Every write is one ``fw_setenv -s`` script
(libubootenv's script lines are ``name=value``; ``name value`` lines are silently ignored).
An environment that was never written (bad CRC) reads as empty through ``-f`` with an empty
default environment, instead of failing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fleetwarden.agent.boot.base import Bootloader, env_from_vars, env_to_vars
from fleetwarden.agent.installers.base import run_command
from fleetwarden.core.ab import BootEnv, SlotState

__all__ = ["UBootBootloader"]


class UBootBootloader(Bootloader):
    name = "uboot"

    def __init__(
        self,
        slots: tuple[str, ...],
        config: Path = Path("/etc/fw_env.config"),
        cmdline: Path = Path("/proc/cmdline"),
    ) -> None:
        super().__init__(slots, cmdline)
        self.config = config

    def _tool(self, name: str, *args: str) -> str:
        with tempfile.TemporaryDirectory(prefix="fw-uboot-") as tmp:
            empty = Path(tmp) / "defenv"
            empty.write_text("")
            return run_command([name, "-c", str(self.config), "-f", str(empty), *args], what=name)

    def _vars(self) -> dict[str, str]:
        out = self._tool("fw_printenv")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def read(self) -> BootEnv:
        return env_from_vars(self._vars(), "BOOT_", self.slots) or BootEnv.fresh(
            self.slots, self.booted()
        )

    def write(self, env: BootEnv) -> None:
        values = env_to_vars(env, "BOOT_")
        trying = [s for s in env.order if env.state(s) is SlotState.TRYING]
        values["upgrade_available"] = "1" if trying else "0"
        if trying:
            values["bootlimit"] = str(env.attempts_left(trying[0]))
        values["bootcount"] = "0"
        script = "".join(f"{k}={v}\n" for k, v in sorted(values.items()))
        with tempfile.NamedTemporaryFile("w", suffix=".fw_setenv") as f:
            f.write(script)
            f.flush()
            self._tool("fw_setenv", "-s", f.name)
