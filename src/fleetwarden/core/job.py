"""The lifecycle of one install on a device: the steps the agent journals, as a table.

Each step is journalled *before* its work starts; the work ends with an ``Outcome`` and
``next_step`` says where the job goes. The agent (the shell) does the work and the journalling;
this module decides.

Rules:
  1. Every path through ``TRANSITIONS`` ends in a final step (committed, rolled_back, failed).
  2. ``rolled_back`` is reachable only through ``installing``: before it nothing changed on
     the device, so a failure there is ``failed``.
  3. ``installing`` is reachable only through ``prepared``, whose report ("installing") the
     server must acknowledge first: that acknowledgement is the last chance for a cancellation.
  4. ``resume``: a restart that finds ``installing`` means installers may have stopped
     half-way, so the job rolls back; a restart in ``rebooting`` after the reboot was requested
     means the reboot happened, so the job verifies. Every other step resumes as it is (its
     work is idempotent).
  5. Until a step reports ``installing``, a withdrawal by the server abandons the job
     (``ABANDONABLE``); after that the device finishes or rolls back on its own.
"""

from __future__ import annotations

import enum

from fleetwarden.core.assignments import AssignmentState
from fleetwarden.errors import IllegalTransition

__all__ = [
    "ABANDONABLE",
    "FINAL",
    "REPORT_BEFORE",
    "TRANSITIONS",
    "Outcome",
    "Step",
    "next_step",
    "resume",
]


class Step(enum.StrEnum):
    RECEIVED = "received"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    VERIFIED = "verified"
    PREPARED = "prepared"  # rollback snapshot taken; "installing" is reported here
    INSTALLING = "installing"  # installers running; a restart here means: roll back
    INSTALLED = "installed"
    REBOOTING = "rebooting"
    VERIFYING = "verifying"  # health checks
    COMMITTING = "committing"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"  # the step's work failed
    RETRY = "retry"  # a download or its hash check failed, attempts remain
    REBOOT = "reboot"  # installed, and an installer asked for a reboot


TRANSITIONS: dict[Step, dict[Outcome, Step]] = {
    # FAILED: the assignment did not verify against the TUF repositories; nothing changed.
    Step.RECEIVED: {Outcome.OK: Step.DOWNLOADING, Outcome.FAILED: Step.FAILED},
    Step.DOWNLOADING: {
        Outcome.OK: Step.DOWNLOADED,
        Outcome.RETRY: Step.DOWNLOADING,
        Outcome.FAILED: Step.FAILED,
    },
    Step.DOWNLOADED: {
        Outcome.OK: Step.VERIFIED,
        Outcome.RETRY: Step.DOWNLOADING,
        Outcome.FAILED: Step.FAILED,
    },
    Step.VERIFIED: {Outcome.OK: Step.PREPARED, Outcome.FAILED: Step.FAILED},
    # FAILED: a pre-install hook (e.g. drain) failed; nothing was changed yet.
    Step.PREPARED: {Outcome.OK: Step.INSTALLING, Outcome.FAILED: Step.FAILED},
    Step.INSTALLING: {
        Outcome.OK: Step.INSTALLED,
        Outcome.REBOOT: Step.INSTALLED,
        Outcome.FAILED: Step.ROLLING_BACK,
    },
    Step.INSTALLED: {Outcome.OK: Step.VERIFYING, Outcome.REBOOT: Step.REBOOTING},
    Step.REBOOTING: {Outcome.OK: Step.VERIFYING, Outcome.FAILED: Step.ROLLING_BACK},
    Step.VERIFYING: {Outcome.OK: Step.COMMITTING, Outcome.FAILED: Step.ROLLING_BACK},
    Step.COMMITTING: {Outcome.OK: Step.COMMITTED, Outcome.FAILED: Step.ROLLING_BACK},
    Step.ROLLING_BACK: {Outcome.OK: Step.ROLLED_BACK, Outcome.FAILED: Step.FAILED},
    Step.COMMITTED: {},
    Step.ROLLED_BACK: {},
    Step.FAILED: {},
}

FINAL: frozenset[Step] = frozenset({Step.COMMITTED, Step.ROLLED_BACK, Step.FAILED})

#: The assignment state reported to the server before each step's work.
REPORT_BEFORE: dict[Step, AssignmentState] = {
    Step.DOWNLOADING: AssignmentState.DOWNLOADING,
    Step.PREPARED: AssignmentState.INSTALLING,
    Step.REBOOTING: AssignmentState.REBOOTING,
    Step.VERIFYING: AssignmentState.VERIFYING,
    Step.COMMITTED: AssignmentState.SUCCEEDED,
    Step.ROLLED_BACK: AssignmentState.ROLLED_BACK,
    Step.FAILED: AssignmentState.FAILED,
}

ABANDONABLE: frozenset[Step] = frozenset(
    {Step.RECEIVED, Step.DOWNLOADING, Step.DOWNLOADED, Step.VERIFIED, Step.PREPARED}
)


def next_step(step: Step, outcome: Outcome) -> Step:
    """Raises ``IllegalTransition`` for an outcome the step cannot have."""
    try:
        return TRANSITIONS[step][outcome]
    except KeyError:
        raise IllegalTransition(f"step {step.value} cannot end {outcome.value}") from None


def resume(step: Step, *, reboot_requested: bool) -> Step:
    """Where a job found in the journal at start-up continues (rule 4)."""
    if step is Step.INSTALLING:
        return Step.ROLLING_BACK
    if step is Step.REBOOTING and reboot_requested:
        return Step.VERIFYING
    return step
