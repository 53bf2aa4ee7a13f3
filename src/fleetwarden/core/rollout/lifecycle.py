"""The lifecycle of a rollout, and who may move it.

States and the verbs that move them (operators' verbs, plus the controller's ``gate_pause``,
``finish`` and ``rollback_done``)::

    waiting_for_approval ─approve→ ready ─start→ running ⇄ paused (pause / resume, gate_pause)
          │ deny → denied        │                running ─finish→ finished ─retry_failed→ running
          └──────── abort ───────┴──── abort → aborted;  abort_and_rollback → rolling_back
                                                              rolling_back ─rollback_done→ aborted

Rules:
  1. A rollout that does not need approval is created ``ready``.
  2. Approval needs a different person than the creator (four eyes) unless the strategy allows
     self-approval; the role check (approver) is the API's.
  3. Terminal states (denied, aborted) accept no verb; every illegal move raises
     ``IllegalTransition`` naming the state and the verb.
"""

from __future__ import annotations

import enum

from fleetwarden.errors import IllegalTransition, PermissionDenied

__all__ = ["TRANSITIONS", "RolloutState", "Verb", "apply", "check_approver", "initial_state"]


class RolloutState(enum.StrEnum):
    WAITING_FOR_APPROVAL = "waiting_for_approval"
    READY = "ready"
    DENIED = "denied"
    RUNNING = "running"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    ABORTED = "aborted"
    FINISHED = "finished"


class Verb(enum.StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ABORT_AND_ROLLBACK = "abort_and_rollback"
    RETRY_FAILED = "retry_failed"
    ADVANCE = "advance"
    GATE_PAUSE = "gate_pause"
    FINISH = "finish"
    ROLLBACK_DONE = "rollback_done"


S, V = RolloutState, Verb

TRANSITIONS: dict[RolloutState, dict[Verb, RolloutState]] = {
    S.WAITING_FOR_APPROVAL: {V.APPROVE: S.READY, V.DENY: S.DENIED, V.ABORT: S.ABORTED},
    S.READY: {V.START: S.RUNNING, V.ABORT: S.ABORTED},
    S.RUNNING: {
        V.PAUSE: S.PAUSED,
        V.GATE_PAUSE: S.PAUSED,
        V.ABORT: S.ABORTED,
        V.ABORT_AND_ROLLBACK: S.ROLLING_BACK,
        V.RETRY_FAILED: S.RUNNING,
        V.ADVANCE: S.RUNNING,
        V.FINISH: S.FINISHED,
    },
    S.PAUSED: {
        V.RESUME: S.RUNNING,
        V.ABORT: S.ABORTED,
        V.ABORT_AND_ROLLBACK: S.ROLLING_BACK,
        V.RETRY_FAILED: S.PAUSED,
        V.ADVANCE: S.PAUSED,
    },
    S.ROLLING_BACK: {V.ROLLBACK_DONE: S.ABORTED},
    S.FINISHED: {V.RETRY_FAILED: S.RUNNING},
    S.DENIED: {},
    S.ABORTED: {},
}

ACTIVE_STATES = frozenset({S.RUNNING, S.PAUSED, S.ROLLING_BACK})


def initial_state(*, approval_required: bool) -> RolloutState:
    """Rule 1."""
    return S.WAITING_FOR_APPROVAL if approval_required else S.READY


def apply(state: RolloutState, verb: Verb) -> RolloutState:
    """Rule 3: the next state, or ``IllegalTransition``."""
    try:
        return TRANSITIONS[state][verb]
    except KeyError:
        raise IllegalTransition(
            f"a {state.value} rollout cannot {verb.value.replace('_', ' ')}"
        ) from None


def check_approver(*, creator: str, approver: str, allow_self_approval: bool) -> None:
    """Rule 2: raises ``PermissionDenied`` when the creator approves their own rollout."""
    if creator == approver and not allow_self_approval:
        raise PermissionDenied(
            "four eyes: a rollout must be approved by someone other than its creator"
        )
