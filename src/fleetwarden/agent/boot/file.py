"""The ``file`` backend: the boot environment is one JSON file, replaced atomically.

Used by the A/B test rig and by devices whose boot script reads it (an initramfs or a custom
first-stage loader). Format, stable and documented in docs/ab-updates.md::

    {"order": ["B", "A"],
     "slots": {"A": {"state": "good", "left": 3}, "B": {"state": "trying", "left": 2}}}

The boot script boots the first slot of ``order`` whose state is ``good``, or ``trying`` with
``left`` > 0 (spending one), and passes ``fleetwarden.slot=<slot>`` on the kernel command line.
"""

from __future__ import annotations

import json
from pathlib import Path

from fleetwarden.agent.boot.base import Bootloader
from fleetwarden.atomicfile import write_atomic
from fleetwarden.core.ab import BootEnv, SlotState
from fleetwarden.errors import InstallError

__all__ = ["FileBootloader", "dump_env", "load_env"]


class FileBootloader(Bootloader):
    name = "file"

    def __init__(
        self, slots: tuple[str, ...], env_file: Path, cmdline: Path = Path("/proc/cmdline")
    ) -> None:
        super().__init__(slots, cmdline)
        self.env_file = env_file

    def read(self) -> BootEnv:
        try:
            data = self.env_file.read_bytes()
        except FileNotFoundError:
            return BootEnv.fresh(self.slots, self.booted())
        except OSError as e:
            raise InstallError(f"cannot read boot environment {self.env_file}: {e}") from e
        return load_env(data, self.slots, what=str(self.env_file))

    def write(self, env: BootEnv) -> None:
        try:
            write_atomic(self.env_file, dump_env(env))
        except OSError as e:
            raise InstallError(f"cannot write boot environment {self.env_file}: {e}") from e


def dump_env(env: BootEnv) -> bytes:
    doc = {
        "order": list(env.order),
        "slots": {
            s: {"state": env.state(s).value, "left": env.attempts_left(s)} for s in env.slots
        },
    }
    return json.dumps(doc, sort_keys=True, indent=1).encode()


def load_env(data: bytes, slots: tuple[str, ...], *, what: str) -> BootEnv:
    """Raises ``InstallError`` naming the problem for anything but a well-formed file."""
    try:
        doc = json.loads(data)
        order = tuple(str(s) for s in doc["order"])
        raw = doc["slots"]
        states = tuple((s, SlotState(raw[s]["state"])) for s in slots)
        left = tuple((s, int(raw[s]["left"])) for s in slots)
    except (ValueError, KeyError, TypeError) as e:
        raise InstallError(f"boot environment {what} is malformed: {e!r}") from e
    if any(s not in slots for s in order) or any(n < 0 for _, n in left):
        raise InstallError(f"boot environment {what} names unknown slots or negative attempts")
    return BootEnv(order=order, states=states, left=left)
