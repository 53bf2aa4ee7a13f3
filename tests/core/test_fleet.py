"""The one state an operator sees for a device, and counts over a fleet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwarden.core.assignments import ACTIVE_STATES, AssignmentState
from fleetwarden.core.fleet import DeviceFacts, DeviceState, derive_state, summarize

S = AssignmentState
D = DeviceState
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
OFFLINE_AFTER = timedelta(minutes=5)
FAILED_OUTCOMES = frozenset({S.FAILED, S.ROLLED_BACK})
QUIET = (None, S.SUCCEEDED, S.CANCELLED)  # latest assignment that asks for no attention

last_seens = st.one_of(
    st.none(),
    st.timedeltas(min_value=timedelta(days=-1), max_value=timedelta(days=30)).map(
        lambda ago: NOW - ago
    ),
)
latest = st.one_of(st.none(), st.sampled_from(list(AssignmentState)))
facts = st.builds(
    DeviceFacts, revoked=st.booleans(), last_seen=last_seens, latest_assignment=latest
)


def _state(revoked=False, last_seen=NOW, latest_assignment=None, now=NOW):
    return derive_state(
        DeviceFacts(revoked, last_seen, latest_assignment), now=now, offline_after=OFFLINE_AFTER
    )


@pytest.mark.parametrize(
    ("revoked", "ago", "latest_assignment", "expected"),
    [
        (True, None, S.INSTALLING, D.REVOKED),
        (True, timedelta(0), S.FAILED, D.REVOKED),
        (False, timedelta(days=3), S.DOWNLOADING, D.UPDATING),
        (False, None, S.PENDING, D.UPDATING),
        (False, timedelta(days=3), S.FAILED, D.FAILED),
        (False, None, S.ROLLED_BACK, D.FAILED),
        (False, None, None, D.NEVER_SEEN),
        (False, None, S.SUCCEEDED, D.NEVER_SEEN),
        (False, timedelta(days=3), None, D.OFFLINE),
        (False, timedelta(days=3), S.CANCELLED, D.OFFLINE),
        (False, timedelta(seconds=30), None, D.ONLINE),
        (False, timedelta(seconds=30), S.SUCCEEDED, D.ONLINE),
    ],
)
def test_precedence_examples(revoked, ago, latest_assignment, expected):
    """Rule 1: precedence revoked > updating > failed > never_seen > offline > online."""
    last_seen = None if ago is None else NOW - ago
    assert _state(revoked, last_seen, latest_assignment) is expected


def test_offline_boundary():
    """Rule 2: offline when not seen for *longer than* offline_after."""
    assert _state(last_seen=NOW - OFFLINE_AFTER) is D.ONLINE
    assert _state(last_seen=NOW - OFFLINE_AFTER - timedelta(microseconds=1)) is D.OFFLINE
    assert _state(last_seen=NOW + timedelta(minutes=1)) is D.ONLINE  # clock skew: seen "later"


def test_later_success_clears_failure():
    """Rule 3: a later success clears a failure; a newer assignment in flight shows updating."""
    assert _state(latest_assignment=S.FAILED) is D.FAILED
    assert _state(latest_assignment=S.SUCCEEDED) is D.ONLINE
    assert _state(latest_assignment=S.PENDING) is D.UPDATING


@given(facts)
def test_derive_state_follows_the_rules(f):
    """Rules 1-3 as properties over arbitrary facts."""
    state = derive_state(f, now=NOW, offline_after=OFFLINE_AFTER)
    if f.revoked:
        assert state is D.REVOKED
    elif f.latest_assignment in ACTIVE_STATES:
        assert state is D.UPDATING  # even if offline or never seen
    elif f.latest_assignment in FAILED_OUTCOMES:
        assert state is D.FAILED
    else:
        assert f.latest_assignment in QUIET
        if f.last_seen is None:
            assert state is D.NEVER_SEEN
        else:
            assert state is (D.OFFLINE if NOW - f.last_seen > OFFLINE_AFTER else D.ONLINE)


@given(facts, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10)))
def test_time_passing_only_takes_devices_offline(f, elapsed):
    """Rule 2: with nothing else changing, time passing can only turn online into offline."""
    before = derive_state(f, now=NOW, offline_after=OFFLINE_AFTER)
    after = derive_state(f, now=NOW + elapsed, offline_after=OFFLINE_AFTER)
    assert after is before or (before is D.ONLINE and after is D.OFFLINE)


def test_summarize_counts_every_state_in_declaration_order():
    """summarize: counts per state, with every state present (zero where none), in
    declaration order."""
    counts = summarize([D.ONLINE, D.FAILED, D.ONLINE, D.REVOKED])
    assert list(counts) == list(DeviceState)
    assert counts == {
        D.ONLINE: 2,
        D.OFFLINE: 0,
        D.NEVER_SEEN: 0,
        D.UPDATING: 0,
        D.FAILED: 1,
        D.REVOKED: 1,
    }
    assert summarize([]) == dict.fromkeys(DeviceState, 0)
    assert summarize(iter([D.UPDATING]))[D.UPDATING] == 1


@given(st.lists(st.sampled_from(list(DeviceState))))
def test_summarize_property(states):
    """summarize: counts add up and every state is present, in declaration order."""
    counts = summarize(states)
    assert list(counts) == list(DeviceState)
    assert sum(counts.values()) == len(states)
    for state in DeviceState:
        assert counts[state] == states.count(state)
