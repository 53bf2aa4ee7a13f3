"""Whole-image A/B updates: the boot environment, the boot loader's choice, and the agent's
decisions around a reboot, as pure functions.

A device has two root slots. The agent writes the one it did not boot, then asks the boot
loader to try it; only a boot that passes the health checks makes it permanent. Every
backend (GRUB, U-Boot, EFI, the file backend) is mapped onto ``BootEnv``, so the rules below
are checked once, here, with property tests.

Rules (the invariants of the unified A/B state machine):
  1. The target slot is marked bad *before* a single byte is written to it (``begin_write``):
     a power cut mid-write can never leave a half-written slot bootable.
  2. Activation happens only after the full image was written and verified, in one
     boot-environment write that makes the target primary *and* gives it its attempts
     (``activate``).
  3. The boot loader boots the first slot of the order that is not bad and has attempts left,
     spending one (``boot``). An unconfirmed slot is therefore tried at most ``attempts``
     times, then the boot loader falls back on its own.
  4. Commit only from the newly booted slot (``commit``); a boot of anything else means the
     boot loader fell back, which is reported as a rollback and never committed
     (``after_boot``).
  5. Marking a slot bad removes it from the boot order; a slot marked good gets its attempts
     back, so a committed slot stays bootable for good.
  6. Rolling back marks the target bad and makes the previous slot primary; it needs a reboot
     only if the device is running the target (``rollback``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from fleetwarden.errors import InputError, InstallError

__all__ = [
    "DEFAULT_ATTEMPTS",
    "BootEnv",
    "BootVerdict",
    "RollbackPlan",
    "SlotState",
    "activate",
    "after_boot",
    "begin_write",
    "boot",
    "commit",
    "inactive_slot",
    "rollback",
]

DEFAULT_ATTEMPTS = 3


class SlotState(enum.StrEnum):
    GOOD = "good"  # committed: boots for good
    TRYING = "trying"  # activated, not yet confirmed by a healthy boot
    BAD = "bad"  # never booted by the boot loader


@dataclass(frozen=True, slots=True)
class BootEnv:
    """What the boot loader keeps: the order it tries slots in, each slot's state and the
    boots it has left. Backends translate their variables to and from this."""

    order: tuple[str, ...]
    states: tuple[tuple[str, SlotState], ...]
    left: tuple[tuple[str, int], ...]

    @classmethod
    def fresh(cls, slots: tuple[str, ...], booted: str) -> BootEnv:
        """A factory-fresh device: the booted slot good and primary, the others bad."""
        if booted not in slots:
            raise InputError(f"booted slot {booted!r} is not one of {', '.join(slots)}")
        return cls(
            order=(booted,),
            states=tuple((s, SlotState.GOOD if s == booted else SlotState.BAD) for s in slots),
            left=tuple((s, DEFAULT_ATTEMPTS if s == booted else 0) for s in slots),
        )

    def state(self, slot: str) -> SlotState:
        return dict(self.states)[slot]

    def attempts_left(self, slot: str) -> int:
        return dict(self.left)[slot]

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.states)

    def with_slot(
        self, slot: str, state: SlotState, left: int, order: tuple[str, ...] | None = None
    ) -> BootEnv:
        if slot not in self.slots:
            raise InputError(f"no slot {slot!r} (slots: {', '.join(self.slots)})")
        return replace(
            self,
            order=self.order if order is None else order,
            states=tuple((s, state if s == slot else st) for s, st in self.states),
            left=tuple((s, left if s == slot else n) for s, n in self.left),
        )


def inactive_slot(env: BootEnv, booted: str) -> str:
    """The slot to write: the one the device is not running."""
    others = [s for s in env.slots if s != booted]
    if booted not in env.slots or len(others) != 1:
        raise InstallError(
            f"A/B needs exactly two slots and a booted one; have {list(env.slots)}, "
            f"booted {booted!r}"
        )
    return others[0]


def begin_write(env: BootEnv, target: str) -> BootEnv:
    """Rule 1: mark the target bad (and out of the order) before writing it."""
    return env.with_slot(target, SlotState.BAD, 0, tuple(s for s in env.order if s != target))


def activate(env: BootEnv, target: str, attempts: int = DEFAULT_ATTEMPTS) -> BootEnv:
    """Rule 2: the written, verified target becomes primary with ``attempts`` tries."""
    if attempts < 1:
        raise InputError("attempts must be at least 1")
    order = (target, *(s for s in env.order if s != target))
    return env.with_slot(target, SlotState.TRYING, attempts, order)


def boot(env: BootEnv, attempts: int = DEFAULT_ATTEMPTS) -> tuple[str, BootEnv]:
    """Rule 3: what the boot loader does at power-on. Returns the slot booted and the
    environment it leaves. Good slots always boot and get their attempts back (rule 5); if
    no slot can be booted, the first good slot of any is booted rather than bricking."""
    for slot in env.order:
        st, left = env.state(slot), env.attempts_left(slot)
        if st is SlotState.GOOD:
            return slot, env.with_slot(slot, st, attempts)
        if st is SlotState.TRYING and left > 0:
            return slot, env.with_slot(slot, st, left - 1)
    for slot in env.slots:
        if env.state(slot) is SlotState.GOOD:
            return slot, env.with_slot(slot, SlotState.GOOD, attempts, (slot, *env.order))
    raise InstallError("no bootable slot: every slot is bad or out of attempts")


class BootVerdict(enum.StrEnum):
    TEST = "test"  # running the new slot: run the health checks, then commit or roll back
    FELL_BACK = "fell_back"  # the boot loader gave up on the new slot


def after_boot(target: str, booted: str) -> BootVerdict:
    """Rule 4: the first decision after the reboot into an update."""
    return BootVerdict.TEST if booted == target else BootVerdict.FELL_BACK


def commit(env: BootEnv, target: str, booted: str, attempts: int = DEFAULT_ATTEMPTS) -> BootEnv:
    """Rule 4 and 5: confirm the running target.

    Raises:
        InstallError: the device is not running the target (never commit another slot).
    """
    if booted != target:
        raise InstallError(f"refusing to commit slot {target}: the device is running slot {booted}")
    order = (target, *(s for s in env.order if s != target))
    return env.with_slot(target, SlotState.GOOD, attempts, order)


@dataclass(frozen=True, slots=True)
class RollbackPlan:
    env: BootEnv
    reboot: bool


def rollback(env: BootEnv, target: str, previous: str, booted: str) -> RollbackPlan:
    """Rule 6: the target is bad, the previous slot primary; reboot if running the target.
    Idempotent: applying it to its own result changes nothing."""
    env = begin_write(env, target)
    order = (previous, *(s for s in env.order if s != previous))
    prev_state = env.state(previous)
    if prev_state is SlotState.BAD:
        prev_state = SlotState.GOOD  # it was running before the update: it is known good
    env = env.with_slot(previous, prev_state, max(env.attempts_left(previous), 1), order)
    return RollbackPlan(env=env, reboot=booted == target)
