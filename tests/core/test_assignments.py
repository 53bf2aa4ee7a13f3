"""The assignment lifecycle: the transition table and the laws it promises."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwarden.core.assignments import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    AssignmentState,
    Transition,
    advance,
    cancel,
)
from fleetwarden.errors import ConflictError, IllegalTransition

S = AssignmentState
ALL = list(AssignmentState)
PAIRS = list(itertools.product(ALL, ALL))
#: The forward order the module docstring draws; every terminal state ranks last.
RANK = {S.PENDING: 0, S.DOWNLOADING: 1, S.INSTALLING: 2, S.REBOOTING: 3, S.VERIFYING: 4}
RANK.update(dict.fromkeys(TERMINAL_STATES, 5))
FROM_TERMINAL = [(c, r) for c, r in PAIRS if c in TERMINAL_STATES]
BACKWARDS = [
    (c, r) for c, r in PAIRS if c in ACTIVE_STATES and r in ACTIVE_STATES and RANK[r] < RANK[c]
]


def _try_advance(current, reported):
    try:
        return advance(current, reported)
    except IllegalTransition:
        return None


def test_states_partition_into_active_and_terminal():
    """States: succeeded, failed, rolled_back and cancelled are terminal; the rest are active."""
    assert {S.SUCCEEDED, S.FAILED, S.ROLLED_BACK, S.CANCELLED} == TERMINAL_STATES
    assert {S.PENDING, S.DOWNLOADING, S.INSTALLING, S.REBOOTING, S.VERIFYING} == ACTIVE_STATES
    assert set(TRANSITIONS) == set(ALL)
    for state in ALL:
        assert state not in TRANSITIONS[state]


@pytest.mark.parametrize(("current", "reported"), FROM_TERMINAL)
def test_terminal_states_never_change(current, reported):
    """Rule 1: terminal states (succeeded, failed, rolled_back, cancelled) never change."""
    assert TRANSITIONS[current] == frozenset()
    if reported is current:
        t = advance(current, reported)
        assert t == Transition(current, current)
        assert not t.changed
        assert not t.finished
    else:
        with pytest.raises(IllegalTransition) as info:
            advance(current, reported)
        assert isinstance(info.value, ConflictError)
        assert current.value in str(info.value)


@pytest.mark.parametrize("state", ALL)
def test_repeated_report_changes_nothing(state):
    """Rule 2: a device report of the state the assignment is already in changes nothing."""
    assert advance(state, state) == Transition(state, state)


@pytest.mark.parametrize(("current", "reported"), PAIRS)
def test_advance_is_idempotent(current, reported):
    """Rule 2: devices retry reports after network errors, so reports are idempotent."""
    first = _try_advance(current, reported)
    if first is None:
        return
    again = advance(first.after, reported)
    assert again == Transition(first.after, first.after)
    assert not again.changed


@pytest.mark.parametrize(("current", "reported"), BACKWARDS)
def test_stale_earlier_reports_are_no_ops(current, reported):
    """Rule 3: a device report of an *earlier* non-terminal state is stale and changes nothing."""
    assert advance(current, reported) == Transition(current, current)


@pytest.mark.parametrize(("current", "reported"), PAIRS)
def test_moves_outside_the_table_raise(current, reported):
    """Rule 4: any other move not in TRANSITIONS raises IllegalTransition."""
    allowed = reported in TRANSITIONS[current]
    stale_or_same = reported is current or (
        current in ACTIVE_STATES and reported in ACTIVE_STATES and RANK[reported] < RANK[current]
    )
    if allowed:
        t = advance(current, reported)
        assert t == Transition(current, reported)
        assert t.changed
        assert t.finished is (reported in TERMINAL_STATES)
    elif stale_or_same:
        assert not advance(current, reported).changed
    else:
        with pytest.raises(IllegalTransition):
            advance(current, reported)


@pytest.mark.parametrize(
    ("current", "reported"),
    [
        (S.PENDING, S.REBOOTING),
        (S.PENDING, S.VERIFYING),
        (S.DOWNLOADING, S.REBOOTING),
        (S.DOWNLOADING, S.VERIFYING),
        (S.DOWNLOADING, S.SUCCEEDED),
        (S.INSTALLING, S.CANCELLED),
        (S.VERIFYING, S.CANCELLED),
    ],
)
def test_examples_of_illegal_moves(current, reported):
    """Rule 4: skipping ahead past the table, or cancelling after installation, raises."""
    with pytest.raises(IllegalTransition):
        advance(current, reported)


@pytest.mark.parametrize(
    ("current", "reported"),
    [
        (S.PENDING, S.DOWNLOADING),
        (S.PENDING, S.INSTALLING),  # artifacts already cached on the device
        (S.PENDING, S.SUCCEEDED),  # the device already runs this release
        (S.DOWNLOADING, S.INSTALLING),
        (S.INSTALLING, S.REBOOTING),
        (S.INSTALLING, S.VERIFYING),
        (S.REBOOTING, S.VERIFYING),
        (S.VERIFYING, S.SUCCEEDED),
    ],
)
def test_examples_of_forward_moves(current, reported):
    """The diagram: pending → downloading → installing → (rebooting →) verifying → succeeded."""
    assert advance(current, reported) == Transition(current, reported)


@pytest.mark.parametrize("state", ALL)
def test_rolled_back_only_once_installation_began(state):
    """Rule 5: rolled_back is only reachable once installation began; before that the outcome
    is failed."""
    if state in {S.PENDING, S.DOWNLOADING}:
        with pytest.raises(IllegalTransition):
            advance(state, S.ROLLED_BACK)
        assert advance(state, S.FAILED).after is S.FAILED
    elif state in {S.INSTALLING, S.REBOOTING, S.VERIFYING}:
        assert advance(state, S.ROLLED_BACK) == Transition(state, S.ROLLED_BACK)
        assert advance(state, S.FAILED) == Transition(state, S.FAILED)


@pytest.mark.parametrize("state", ALL)
def test_cancel_only_before_installation(state):
    """Rule 6: cancellation is allowed only before installation begins (pending, downloading)."""
    if state in {S.PENDING, S.DOWNLOADING}:
        t = cancel(state)
        assert t == Transition(state, S.CANCELLED)
        assert t.changed
        assert t.finished
    elif state is S.CANCELLED:
        t = cancel(state)
        assert t == Transition(S.CANCELLED, S.CANCELLED)
        assert not t.finished
    else:
        with pytest.raises(IllegalTransition):
            cancel(state)


def test_transition_flags():
    """Transition.changed is before != after; finished is a change into a terminal state."""
    assert not Transition(S.PENDING, S.PENDING).changed
    assert Transition(S.PENDING, S.DOWNLOADING).changed
    assert not Transition(S.PENDING, S.DOWNLOADING).finished
    assert Transition(S.VERIFYING, S.SUCCEEDED).finished
    assert not Transition(S.SUCCEEDED, S.SUCCEEDED).finished


@given(st.sampled_from(ALL), st.lists(st.sampled_from(ALL), max_size=30))
def test_random_reports_only_move_forward(start, reports):
    """States move forward only: pending < downloading < installing < rebooting < verifying <
    terminal, whatever the devices report and in whatever order (illegal reports are skipped)."""
    state = start
    for reported in reports:
        t = _try_advance(state, reported)
        if t is None:
            continue
        assert t.before is state
        assert RANK[t.after] >= RANK[state]
        if t.changed:
            assert RANK[t.after] > RANK[state]
            assert t.after in TRANSITIONS[state]
        if state in TERMINAL_STATES:
            assert t.after is state
        state = t.after


@given(st.lists(st.sampled_from(ALL), max_size=30), st.lists(st.booleans(), max_size=30))
def test_random_reports_and_cancels_reach_at_most_one_terminal_state(reports, cancels):
    """Rule 1: once a terminal state is reached, no report or cancellation leaves it."""
    state = S.PENDING
    terminal = None
    for reported, do_cancel in itertools.zip_longest(reports, cancels):
        step = None
        if do_cancel:
            try:
                step = cancel(state)
            except IllegalTransition:
                step = None
        elif reported is not None:
            step = _try_advance(state, reported)
        if step is not None:
            state = step.after
        if terminal is not None:
            assert state is terminal
        elif state in TERMINAL_STATES:
            terminal = state
