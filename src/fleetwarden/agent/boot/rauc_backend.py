"""RAUC's custom boot loader backend over our ``file`` boot environment.

RAUC (``bootloader=custom``, ``[handlers] bootloader-custom-backend=<exe>``) calls the backend
with ``get-primary``, ``set-primary <slot>``, ``get-state <slot>``, ``set-state <slot>
good|bad`` and ``get-current``. This maps them onto ``core.ab`` so a device can let RAUC do the
installing while the boot environment keeps our rules (the same file the ``file`` backend and
its boot script use)::

    python -m fleetwarden.agent.boot.rauc_backend --env /var/lib/fw/bootenv.json \\
        --cmdline /proc/cmdline --slots A,B --attempts 3 get-primary

Exit status 0 on success; anything else is an error RAUC reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fleetwarden.agent.boot.file import FileBootloader
from fleetwarden.core import ab
from fleetwarden.core.ab import SlotState
from fleetwarden.errors import FleetwardenError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fleetwarden-rauc-backend")
    p.add_argument("--env", type=Path, required=True)
    p.add_argument("--cmdline", type=Path, default=Path("/proc/cmdline"))
    p.add_argument("--slots", default="A,B")
    p.add_argument("--attempts", type=int, default=ab.DEFAULT_ATTEMPTS)
    p.add_argument("command")
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    boot = FileBootloader(tuple(a.slots.split(",")), a.env, a.cmdline)
    try:
        out = _run(boot, a.command, a.args, a.attempts)
    except (FleetwardenError, ValueError, IndexError) as e:
        sys.stderr.write(f"fleetwarden-rauc-backend: {a.command}: {e}\n")
        return 1
    if out is not None:
        sys.stdout.write(out + "\n")
    return 0


def _run(boot: FileBootloader, command: str, args: list[str], attempts: int) -> str | None:
    env = boot.read()
    if command == "get-primary":
        return env.order[0] if env.order else ""
    if command == "get-current":
        return boot.booted()
    if command == "get-state":
        return "bad" if env.state(args[0]) is SlotState.BAD else "good"
    if command == "set-primary":
        slot = args[0]
        if env.state(slot) is SlotState.GOOD:  # back to a known-good slot: reorder only
            order = (slot, *(s for s in env.order if s != slot))
            boot.write(env.with_slot(slot, SlotState.GOOD, attempts, order))
        else:
            boot.write(ab.activate(env, slot, attempts))
        return None
    if command == "set-state" and args[1] == "bad":
        boot.write(ab.begin_write(env, args[0]))
        return None
    if command == "set-state" and args[1] == "good":
        slot = args[0]
        booted = boot.booted()
        if slot == booted:
            boot.write(ab.commit(env, slot, booted, attempts))
        else:
            boot.write(env.with_slot(slot, SlotState.GOOD, attempts))
        return None
    raise ValueError(f"unknown command {command} {' '.join(args)}")


if __name__ == "__main__":
    raise SystemExit(main())
