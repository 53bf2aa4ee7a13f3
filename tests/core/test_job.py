"""The install lifecycle table (fleetwarden.core.job)."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwarden.core.assignments import AssignmentState
from fleetwarden.core.job import (
    ABANDONABLE,
    FINAL,
    REPORT_BEFORE,
    TRANSITIONS,
    Outcome,
    Step,
    next_step,
    resume,
)
from fleetwarden.errors import IllegalTransition


def _reachable(start: Step, *, without: frozenset[Step] = frozenset()) -> set[Step]:
    seen, todo = {start}, deque([start])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()].values():
            if nxt not in seen and nxt not in without:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@given(st.lists(st.sampled_from(list(Outcome)), max_size=60))
def test_every_path_ends_in_a_final_step(choices):
    """Rule 1: following any outcomes the table allows ends in committed, rolled_back or failed
    (retries are bounded by the agent, so the walk picks a non-retry outcome after a while)."""
    step = Step.RECEIVED
    for i in range(100):
        if step in FINAL:
            break
        allowed = sorted(TRANSITIONS[step], key=lambda o: o is Outcome.RETRY)
        wanted = choices[i] if i < min(len(choices), 30) else None
        step = next_step(step, wanted if wanted in allowed else allowed[0])
    assert step in FINAL


def test_final_steps_have_no_way_out_and_every_other_step_has_one():
    for step, outs in TRANSITIONS.items():
        assert (not outs) == (step in FINAL), step


def test_rolled_back_only_through_installing():
    """Rule 2: without passing INSTALLING, ROLLED_BACK cannot be reached."""
    assert Step.ROLLED_BACK not in _reachable(Step.RECEIVED, without=frozenset({Step.INSTALLING}))
    assert Step.ROLLED_BACK in _reachable(Step.RECEIVED)


def test_installing_only_through_prepared():
    """Rule 3: PREPARED (where "installing" is reported and acknowledged) is the only way in."""
    preds = {s for s, outs in TRANSITIONS.items() if Step.INSTALLING in outs.values()}
    assert preds == {Step.PREPARED}
    assert REPORT_BEFORE[Step.PREPARED] is AssignmentState.INSTALLING


def test_abandonable_steps_are_exactly_those_before_installing():
    """Rule 5: a withdrawal can only abandon a job that has not changed the device."""
    before = _reachable(Step.RECEIVED, without=frozenset({Step.INSTALLING})) - FINAL
    assert before == ABANDONABLE


def test_every_final_step_reports_its_outcome():
    assert {REPORT_BEFORE[s] for s in FINAL} == {
        AssignmentState.SUCCEEDED,
        AssignmentState.ROLLED_BACK,
        AssignmentState.FAILED,
    }


@pytest.mark.parametrize(
    ("step", "requested", "expected"),
    [
        (Step.INSTALLING, False, Step.ROLLING_BACK),
        (Step.INSTALLING, True, Step.ROLLING_BACK),
        (Step.REBOOTING, True, Step.VERIFYING),
        (Step.REBOOTING, False, Step.REBOOTING),
        (Step.DOWNLOADING, False, Step.DOWNLOADING),
        (Step.ROLLING_BACK, False, Step.ROLLING_BACK),
        (Step.COMMITTED, False, Step.COMMITTED),
    ],
)
def test_resume(step, requested, expected):
    """Rule 4: a restart in INSTALLING rolls back; after a requested reboot, verify."""
    assert resume(step, reboot_requested=requested) is expected


@given(st.sampled_from(list(Step)), st.sampled_from(list(Outcome)))
def test_outcomes_outside_the_table_are_refused(step, outcome):
    if outcome in TRANSITIONS[step]:
        assert next_step(step, outcome) is TRANSITIONS[step][outcome]
    else:
        with pytest.raises(IllegalTransition):
            next_step(step, outcome)
