"""The rollout lifecycle (fleetwarden.core.rollout.lifecycle): states, verbs, four eyes."""

from __future__ import annotations

import itertools
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwarden.core.rollout.lifecycle import (
    ACTIVE_STATES,
    TRANSITIONS,
    RolloutState,
    Verb,
    apply,
    check_approver,
    initial_state,
)
from fleetwarden.errors import ConflictError, IllegalTransition, PermissionDenied

S, V = RolloutState, Verb
PAIRS = list(itertools.product(RolloutState, Verb))
TERMINAL = {S.DENIED, S.ABORTED}


def reachable(start: RolloutState) -> set[RolloutState]:
    seen, todo = {start}, deque([start])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()].values():
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize(("state", "verb"), PAIRS)
def test_every_verb_from_every_state_follows_the_table_or_is_illegal(state, verb):
    """Rule 3: every illegal move raises IllegalTransition naming the state and the verb."""
    allowed = TRANSITIONS[state]
    if verb in allowed:
        assert apply(state, verb) is allowed[verb]
        return
    with pytest.raises(IllegalTransition) as info:
        apply(state, verb)
    assert isinstance(info.value, ConflictError)
    assert state.value in str(info.value)
    assert verb.value.replace("_", " ") in str(info.value)


@given(st.lists(st.sampled_from(Verb), max_size=40), st.booleans())
def test_any_sequence_of_verbs_stays_on_the_table(verbs, approval_required):
    """Rule 3 over whole histories: applying any verbs in turn (ignoring the refused ones) only
    ever takes the table's edges, and nothing leaves a terminal state."""
    state = initial_state(approval_required=approval_required)
    for verb in verbs:
        try:
            nxt = apply(state, verb)
        except IllegalTransition:
            assert verb not in TRANSITIONS[state]
            continue
        assert state not in TERMINAL
        assert TRANSITIONS[state][verb] is nxt
        state = nxt


def test_the_table_is_the_one_drawn_in_the_docstring():
    assert set(TRANSITIONS) == set(RolloutState)
    assert TRANSITIONS == {
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


@pytest.mark.parametrize("state", sorted(TERMINAL))
@pytest.mark.parametrize("verb", list(Verb))
def test_terminal_states_accept_no_verb(state, verb):
    """Rule 3: terminal states (denied, aborted) accept no verb."""
    with pytest.raises(IllegalTransition):
        apply(state, verb)


def test_every_state_is_reachable_and_every_other_one_can_still_end():
    every = set(RolloutState)
    assert reachable(S.WAITING_FOR_APPROVAL) == every
    assert reachable(S.READY) == every - {S.WAITING_FOR_APPROVAL, S.DENIED}
    for state in every - TERMINAL:
        assert reachable(state) & TERMINAL, state
    assert reachable(S.ROLLING_BACK) == {S.ROLLING_BACK, S.ABORTED}  # no way back to running
    assert {S.RUNNING, S.PAUSED, S.ROLLING_BACK} == ACTIVE_STATES


def test_only_the_approval_verbs_leave_waiting_for_approval_forward():
    """Nothing starts, advances or finishes before approval."""
    assert reachable(S.WAITING_FOR_APPROVAL) - reachable(S.READY) == {
        S.WAITING_FOR_APPROVAL,
        S.DENIED,
    }
    assert {v for v, s in TRANSITIONS[S.WAITING_FOR_APPROVAL].items() if s is not S.ABORTED} == {
        V.APPROVE,
        V.DENY,
    }


def test_initial_state():
    """Rule 1: a rollout that does not need approval is created ready."""
    assert initial_state(approval_required=True) is S.WAITING_FOR_APPROVAL
    assert initial_state(approval_required=False) is S.READY


@given(st.text(max_size=20), st.text(max_size=20), st.booleans())
def test_four_eyes(creator, approver, allow_self_approval):
    """Rule 2: approval needs a different person than the creator (four eyes) unless the
    strategy allows self-approval."""
    if creator == approver and not allow_self_approval:
        with pytest.raises(PermissionDenied, match="four eyes"):
            check_approver(creator=creator, approver=approver, allow_self_approval=False)
    else:
        check_approver(creator=creator, approver=approver, allow_self_approval=allow_self_approval)


def test_four_eyes_by_example():
    with pytest.raises(PermissionDenied):
        check_approver(creator="alice", approver="alice", allow_self_approval=False)
    check_approver(creator="alice", approver="bob", allow_self_approval=False)
    check_approver(creator="alice", approver="alice", allow_self_approval=True)
