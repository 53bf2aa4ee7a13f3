"""What state a device is in, as an operator sees it, and counts over a fleet.

Rules:
  1. Precedence: revoked > updating > failed > never_seen > offline > online. A device that is
     both offline and mid-update shows as updating: the update is what needs attention.
  2. A device is offline when it has not been seen for longer than ``offline_after``.
  3. ``failed`` means the *last finished* assignment did not succeed (failed or rolled back)
     and nothing newer is in flight; a later success clears it.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleetwarden.core.assignments import ACTIVE_STATES, AssignmentState

__all__ = ["DeviceFacts", "DeviceState", "derive_state", "summarize"]


class DeviceState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    NEVER_SEEN = "never_seen"
    UPDATING = "updating"
    FAILED = "failed"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    revoked: bool
    last_seen: datetime | None
    latest_assignment: AssignmentState | None


_FAILED_OUTCOMES = frozenset({AssignmentState.FAILED, AssignmentState.ROLLED_BACK})


def derive_state(facts: DeviceFacts, *, now: datetime, offline_after: timedelta) -> DeviceState:
    """The one state shown for a device (rules 1-3)."""
    if facts.revoked:
        return DeviceState.REVOKED
    if facts.latest_assignment in ACTIVE_STATES:
        return DeviceState.UPDATING
    if facts.latest_assignment in _FAILED_OUTCOMES:
        return DeviceState.FAILED
    if facts.last_seen is None:
        return DeviceState.NEVER_SEEN
    if now - facts.last_seen > offline_after:
        return DeviceState.OFFLINE
    return DeviceState.ONLINE


def summarize(states: Iterable[DeviceState]) -> dict[DeviceState, int]:
    """Counts per state, with every state present (zero where none), in declaration order."""
    counts = Counter(states)
    return {state: counts.get(state, 0) for state in DeviceState}
