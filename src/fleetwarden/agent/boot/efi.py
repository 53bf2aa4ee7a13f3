"""The ``efi`` backend: UEFI boot entries, through ``efibootmgr``.

UEFI keeps no per-entry state, so the slot states and attempts live in a small JSON file of
the agent (same format as the ``file`` backend) and the firmware gets what it understands:
``BootOrder`` lists the good slots (primary first), and a slot on trial is booted once through
``BootNext`` — the firmware clears it at that boot, so a new slot that hangs falls back to
``BootOrder`` on the next reset (one attempt, EFI's native semantics). The running slot is
``BootCurrent``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from fleetwarden.agent.boot.base import Bootloader
from fleetwarden.agent.boot.file import FileBootloader
from fleetwarden.agent.installers.base import run_command
from fleetwarden.core.ab import BootEnv, SlotState
from fleetwarden.errors import InstallError

__all__ = ["EfiBootloader"]


class EfiBootloader(Bootloader):
    name = "efi"

    def __init__(
        self,
        slots: tuple[str, ...],
        entries: Mapping[str, str],
        state_file: Path,
        tool: str = "efibootmgr",
    ) -> None:
        super().__init__(slots)
        missing = [s for s in slots if s not in entries]
        if missing:
            raise InstallError(f"efi backend: no boot entry configured for slots {missing}")
        self.entries = {s: entries[s].upper() for s in slots}
        self.tool = tool
        self._state = FileBootloader(slots, state_file)

    def booted(self) -> str:
        out = run_command([self.tool], what="efibootmgr")
        m = re.search(r"^BootCurrent:\s*([0-9A-Fa-f]{4})", out, re.MULTILINE)
        if not m:
            raise InstallError("efibootmgr shows no BootCurrent")
        for slot, entry in self.entries.items():
            if entry == m.group(1).upper():
                return slot
        raise InstallError(f"running from boot entry {m.group(1)}, which is no configured slot")

    def read(self) -> BootEnv:
        if not self._state.env_file.exists():
            return BootEnv.fresh(self.slots, self.booted())
        return self._state.read()

    def write(self, env: BootEnv) -> None:
        good = [s for s in env.order if env.state(s) is SlotState.GOOD]
        trial = [
            s for s in env.order if env.state(s) is SlotState.TRYING and env.attempts_left(s) > 0
        ]
        self._state.write(env)
        argv = [self.tool, "--bootorder", ",".join(self.entries[s] for s in good)]
        if trial:
            argv += ["--bootnext", self.entries[trial[0]]]
        run_command(argv, what="efibootmgr")
