"""The lifecycle of one assignment: one release, to one device.

States move forward only::

    pending → downloading → installing → (rebooting →) verifying → succeeded
        │          │             │             │             │
        └──────────┴─────────────┴─────────────┴─────────────┴──→ failed | rolled_back
    pending, downloading ──→ cancelled   (an operator, or a rollout, withdrew it)

Rules:
  1. Terminal states (succeeded, failed, rolled_back, cancelled) never change.
  2. A device report of the state the assignment is already in changes nothing: devices retry
     reports after network errors, so reports are idempotent.
  3. A device report of an *earlier* non-terminal state is stale (it was overtaken by a later
     report that arrived first) and changes nothing.
  4. Any other move not in ``TRANSITIONS`` raises ``IllegalTransition``; the device API answers
     409, which the agent reads as "stop working on this assignment".
  5. ``rolled_back`` is only reachable once installation began: before that nothing was
     changed on the device, so there is nothing to roll back, and the outcome is ``failed``.
  6. Cancellation is allowed only before installation begins; after that the device finishes
     or rolls back on its own, because interrupting an installer half-way is what the whole
     design avoids.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fleetwarden.errors import IllegalTransition

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "AssignmentState",
    "Transition",
    "advance",
    "cancel",
]


class AssignmentState(enum.StrEnum):
    PENDING = "pending"
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    VERIFYING = "verifying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


S = AssignmentState

TERMINAL_STATES: frozenset[AssignmentState] = frozenset(
    {S.SUCCEEDED, S.FAILED, S.ROLLED_BACK, S.CANCELLED}
)
ACTIVE_STATES: frozenset[AssignmentState] = frozenset(AssignmentState) - TERMINAL_STATES

#: Forward order of the non-terminal states, used to recognise stale reports (rule 3).
_ORDER: dict[AssignmentState, int] = {
    S.PENDING: 0,
    S.DOWNLOADING: 1,
    S.INSTALLING: 2,
    S.REBOOTING: 3,
    S.VERIFYING: 4,
}

TRANSITIONS: dict[AssignmentState, frozenset[AssignmentState]] = {
    # "installing" straight from pending: the artifacts were already cached on the device.
    # "succeeded" straight from pending: the device already runs this release.
    S.PENDING: frozenset({S.DOWNLOADING, S.INSTALLING, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.DOWNLOADING: frozenset({S.INSTALLING, S.FAILED, S.CANCELLED}),
    S.INSTALLING: frozenset({S.REBOOTING, S.VERIFYING, S.SUCCEEDED, S.FAILED, S.ROLLED_BACK}),
    S.REBOOTING: frozenset({S.VERIFYING, S.SUCCEEDED, S.FAILED, S.ROLLED_BACK}),
    S.VERIFYING: frozenset({S.SUCCEEDED, S.FAILED, S.ROLLED_BACK}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.CANCELLED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Transition:
    """The decision for one report: the state to store and whether anything changed."""

    before: AssignmentState
    after: AssignmentState

    @property
    def changed(self) -> bool:
        return self.before is not self.after

    @property
    def finished(self) -> bool:
        return self.changed and self.after in TERMINAL_STATES


def advance(current: AssignmentState, reported: AssignmentState) -> Transition:
    """Apply a device's report to the current state.

    Raises:
        IllegalTransition: the report is not allowed from ``current`` (rules 1, 4).
    """
    if reported is current:
        return Transition(current, current)
    if reported in TRANSITIONS[current]:
        return Transition(current, reported)
    if (
        current not in TERMINAL_STATES
        and reported not in TERMINAL_STATES
        and _ORDER[reported] < _ORDER[current]
    ):
        return Transition(current, current)
    raise IllegalTransition(f"assignment is {current.value}; cannot become {reported.value}")


def cancel(current: AssignmentState) -> Transition:
    """An operator withdraws the assignment (rule 6).

    Raises:
        IllegalTransition: installation already began, or the assignment has ended.
    """
    if current is S.CANCELLED:
        return Transition(current, current)
    if S.CANCELLED not in TRANSITIONS[current]:
        raise IllegalTransition(f"assignment is {current.value}; it can no longer be cancelled")
    return Transition(current, S.CANCELLED)
