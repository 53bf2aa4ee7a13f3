"""The ``grub`` backend: the GRUB environment block, through ``grub-editenv``.

Variables: RAUC's GRUB scheme (``ORDER``, ``<slot>_OK``, ``<slot>_TRY``), so existing
``grub.cfg`` boot-selection scripts keep working, plus ``<slot>_STATE`` and ``<slot>_LEFT`` for
the attempt count our ``grub.cfg`` snippet (docs/ab-updates.md) spends. Every write is one
``grub-editenv FILE set …`` call.
"""

from __future__ import annotations

from pathlib import Path

from fleetwarden.agent.boot.base import Bootloader, env_from_vars, env_to_vars
from fleetwarden.agent.installers.base import run_command
from fleetwarden.core.ab import BootEnv, SlotState

__all__ = ["GrubBootloader"]


class GrubBootloader(Bootloader):
    name = "grub"

    def __init__(
        self,
        slots: tuple[str, ...],
        env_file: Path = Path("/boot/grub/grubenv"),
        cmdline: Path = Path("/proc/cmdline"),
        tool: str = "grub-editenv",
    ) -> None:
        super().__init__(slots, cmdline)
        self.env_file = env_file
        self.tool = tool

    def _vars(self) -> dict[str, str]:
        if not self.env_file.exists():
            return {}
        out = run_command([self.tool, str(self.env_file), "list"], what="grub-editenv list")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def read(self) -> BootEnv:
        return env_from_vars(self._vars(), "", self.slots) or BootEnv.fresh(
            self.slots, self.booted()
        )

    def write(self, env: BootEnv) -> None:
        if not self.env_file.exists():
            run_command([self.tool, str(self.env_file), "create"], what="grub-editenv create")
        values = env_to_vars(env, "")
        for slot in env.slots:
            state, left = env.state(slot), env.attempts_left(slot)
            values[f"{slot}_OK"] = "0" if state is SlotState.BAD else "1"
            values[f"{slot}_TRY"] = "1" if state is SlotState.TRYING and left == 0 else "0"
        assignments = [f"{k}={v}" for k, v in sorted(values.items())]
        run_command([self.tool, str(self.env_file), "set", *assignments], what="grub-editenv set")
