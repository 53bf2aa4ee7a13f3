"""The boot loader interface: read and write the boot environment as one ``core.ab.BootEnv``,
and say which slot is running.

Each backend keeps, besides its native variables, the slot states and attempts our model
needs, so a read after a write returns exactly what was written (tests check this on the real
tools). ``write`` changes every variable in one operation of the tool (grub-editenv with
several assignments, ``fw_setenv -s``, one atomic file replace): a power cut leaves the old
environment or the new one.
"""

from __future__ import annotations

import abc
import re
from pathlib import Path
from typing import ClassVar

from fleetwarden.core.ab import BootEnv, SlotState
from fleetwarden.errors import InstallError

__all__ = ["Bootloader", "booted_from_cmdline", "env_from_vars", "env_to_vars"]

_CMDLINE_KEYS = ("fleetwarden.slot", "rauc.slot")


class Bootloader(abc.ABC):
    name: ClassVar[str]

    def __init__(self, slots: tuple[str, ...], cmdline: Path = Path("/proc/cmdline")) -> None:
        self.slots = slots
        self.cmdline = cmdline

    @abc.abstractmethod
    def read(self) -> BootEnv:
        """Raises ``InstallError`` if the environment cannot be read."""

    @abc.abstractmethod
    def write(self, env: BootEnv) -> None:
        """Raises ``InstallError`` if the environment cannot be written."""

    def booted(self) -> str:
        return booted_from_cmdline(self.cmdline, self.slots)


def booted_from_cmdline(path: Path, slots: tuple[str, ...]) -> str:
    """The running slot from the kernel command line (``fleetwarden.slot=B`` or RAUC's
    ``rauc.slot=B``), which the boot script sets for the slot it boots."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InstallError(f"cannot read the kernel command line {path}: {e}") from e
    for key in _CMDLINE_KEYS:
        m = re.search(rf"(?:^|\s){re.escape(key)}=(\S+)", text)
        if m:
            slot = m.group(1)
            if slot not in slots:
                raise InstallError(f"{key}={slot} names no configured slot ({', '.join(slots)})")
            return slot
    raise InstallError(f"{path} names no slot (expected {' or '.join(_CMDLINE_KEYS)}=…)")


def env_to_vars(env: BootEnv, prefix: str) -> dict[str, str]:
    """Our model as flat variables: ``<prefix>ORDER``, ``<prefix><slot>_STATE`` and
    ``<prefix><slot>_LEFT`` (decimal)."""
    out = {f"{prefix}ORDER": " ".join(env.order)}
    for slot in env.slots:
        out[f"{prefix}{slot}_STATE"] = env.state(slot).value
        out[f"{prefix}{slot}_LEFT"] = str(env.attempts_left(slot))
    return out


def env_from_vars(vars_: dict[str, str], prefix: str, slots: tuple[str, ...]) -> BootEnv | None:
    """The inverse of ``env_to_vars``; None if the variables were never written.

    Raises:
        InstallError: they were written but do not parse (names the variable).
    """
    if f"{prefix}ORDER" not in vars_:
        return None
    order = tuple(vars_[f"{prefix}ORDER"].split())
    states, left = [], []
    for slot in slots:
        raw_state = vars_.get(f"{prefix}{slot}_STATE", "bad")
        raw_left = vars_.get(f"{prefix}{slot}_LEFT", "0")
        try:
            states.append((slot, SlotState(raw_state)))
            left.append((slot, int(raw_left, 10)))
        except ValueError as e:
            raise InstallError(f"boot environment: bad value for slot {slot}: {e}") from e
    unknown = [s for s in order if s not in slots]
    if unknown:
        raise InstallError(f"boot environment: {prefix}ORDER names unknown slots {unknown}")
    return BootEnv(order=order, states=tuple(states), left=tuple(left))
