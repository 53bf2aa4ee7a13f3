"""Keeping rollout members in step with their assignments (used by every path that changes an
assignment: device reports, cancellations, timeouts)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from fleetwarden.core import assignments as lifecycle
from fleetwarden.core.rollout.planner import MemberStatus
from fleetwarden.server.models import Assignment, RolloutMember

__all__ = ["on_assignment_change"]


def on_assignment_change(s: Session, a: Assignment, *, now: datetime) -> None:
    """Update the member whose current assignment this is (in the caller's transaction)."""
    if a.rollout_id is None:
        return
    m = s.get(RolloutMember, (a.rollout_id, a.device_id))
    if m is None or m.assignment_id != a.id:
        return  # e.g. a rollback assignment: it does not change the member's outcome
    state = lifecycle.AssignmentState(a.state)
    if state is lifecycle.AssignmentState.SUCCEEDED:
        m.status, m.finished_at = MemberStatus.SUCCEEDED.value, now
    elif state in (lifecycle.AssignmentState.FAILED, lifecycle.AssignmentState.ROLLED_BACK):
        m.status, m.finished_at = MemberStatus.FAILED.value, now
    elif state is lifecycle.AssignmentState.CANCELLED:
        # Withdrawn by an operator or the controller; the controller re-queues it if it means to.
        m.status = MemberStatus.SKIPPED.value
    else:
        m.status = MemberStatus.ACTIVE.value
