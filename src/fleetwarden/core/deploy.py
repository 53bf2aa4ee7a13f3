"""Which devices a deployment assigns, which it must first cancel, and which it skips — and why.

Rules:
  1. A revoked device is never assigned.
  2. When the release names compatible hardware models, a device whose model is not among
     them is skipped ("incompatible"); an empty list means "any model".
  3. A device with an unfinished assignment is skipped, unless ``force`` is given and that
     assignment can still be cancelled (core.assignments rule 6); then it is cancelled first.
  4. A device already running the release (``installed_release``) is skipped.
  5. Every skipped device carries a reason an operator can act on.
  6. Each device appears at most once in the plan, in the order given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fleetwarden.core.assignments import ACTIVE_STATES, TRANSITIONS, AssignmentState

__all__ = ["Candidate", "DeployPlan", "plan_deployment"]


@dataclass(frozen=True, slots=True)
class Candidate:
    device_id: str
    revoked: bool
    hardware_model: str
    installed_release: str
    active_assignment_id: int | None = None
    active_assignment_state: AssignmentState | None = None


@dataclass(frozen=True, slots=True)
class DeployPlan:
    assign: tuple[str, ...]
    cancel: tuple[int, ...]
    skipped: dict[str, str] = field(default_factory=dict)


def plan_deployment(
    candidates: Sequence[Candidate],
    *,
    release: str,
    compatible_models: frozenset[str],
    force: bool,
) -> DeployPlan:
    assign: list[str] = []
    cancel: list[int] = []
    skipped: dict[str, str] = {}
    seen: set[str] = set()
    for c in candidates:
        if c.device_id in seen:
            continue
        seen.add(c.device_id)
        if c.revoked:
            skipped[c.device_id] = "device is revoked"
            continue
        if compatible_models and c.hardware_model not in compatible_models:
            model = c.hardware_model or "unknown"
            skipped[c.device_id] = f"hardware model {model!r} is not compatible with {release}"
            continue
        if c.installed_release == release:
            skipped[c.device_id] = f"already runs {release}"
            continue
        state = c.active_assignment_state
        if state is not None and state in ACTIVE_STATES and c.active_assignment_id is not None:
            if not force:
                skipped[c.device_id] = (
                    f"assignment {c.active_assignment_id} is still {state.value} (use force to replace it)"
                )
                continue
            if AssignmentState.CANCELLED not in TRANSITIONS[state]:
                skipped[c.device_id] = (
                    f"assignment {c.active_assignment_id} is {state.value} and can no longer be cancelled"
                )
                continue
            cancel.append(c.active_assignment_id)
        assign.append(c.device_id)
    return DeployPlan(tuple(assign), tuple(cancel), skipped)
