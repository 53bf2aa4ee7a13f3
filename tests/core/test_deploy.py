"""Deployment planning: which devices a deployment assigns, cancels first, or skips and why."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwarden.core.assignments import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    AssignmentState,
    cancel,
)
from fleetwarden.core.deploy import Candidate, DeployPlan, plan_deployment
from fleetwarden.errors import IllegalTransition

S = AssignmentState
RELEASE = "base-os@2.0"
CANCELLABLE = frozenset({S.PENDING, S.DOWNLOADING})


def _cand(
    device_id="d1", *, revoked=False, model="gw-200", installed="base-os@1.0", aid=None, state=None
):
    return Candidate(device_id, revoked, model, installed, aid, state)


def _plan(candidates, *, models=frozenset(), force=False):
    return plan_deployment(candidates, release=RELEASE, compatible_models=models, force=force)


def test_plain_device_is_assigned():
    """Plan: an active, compatible device without an unfinished assignment is assigned."""
    assert _plan([_cand()]) == DeployPlan(("d1",), (), {})


def test_empty_plan():
    """Plan: no candidates, nothing to do."""
    assert _plan([]) == DeployPlan((), (), {})


@pytest.mark.parametrize("force", [False, True])
def test_revoked_device_is_never_assigned(force):
    """Rule 1: a revoked device is never assigned."""
    plan = _plan([_cand(revoked=True, aid=7, state=S.PENDING)], force=force)
    assert plan.assign == ()
    assert plan.cancel == ()
    assert plan.skipped == {"d1": "device is revoked"}


def test_incompatible_model_is_skipped():
    """Rule 2: a device whose model is not among the release's compatible models is skipped."""
    plan = _plan(
        [_cand("a", model="gw-100"), _cand("b", model="gw-200"), _cand("c", model="")],
        models=frozenset({"gw-200", "gw-300"}),
    )
    assert plan.assign == ("b",)
    assert set(plan.skipped) == {"a", "c"}
    assert "'gw-100'" in plan.skipped["a"]
    assert "not compatible" in plan.skipped["a"]
    assert RELEASE in plan.skipped["a"]
    assert "'unknown'" in plan.skipped["c"]


def test_empty_model_list_means_any_model():
    """Rule 2: an empty list means "any model"."""
    plan = _plan([_cand("a", model="gw-100"), _cand("b", model="")], models=frozenset())
    assert plan.assign == ("a", "b")


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES))
def test_unfinished_assignment_is_skipped_without_force(state):
    """Rule 3: a device with an unfinished assignment is skipped unless force is given."""
    plan = _plan([_cand(aid=41, state=state)])
    assert plan.assign == ()
    assert plan.cancel == ()
    assert "41" in plan.skipped["d1"]
    assert state.value in plan.skipped["d1"]
    assert "force" in plan.skipped["d1"]


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES))
def test_force_cancels_only_what_can_still_be_cancelled(state):
    """Rule 3: with force, an assignment that can still be cancelled (assignments rule 6) is
    cancelled first; one past that point keeps the device skipped."""
    plan = _plan([_cand(aid=41, state=state)], force=True)
    if state in CANCELLABLE:
        assert plan == DeployPlan(("d1",), (41,), {})
        assert cancel(state).after is S.CANCELLED
    else:
        assert plan.assign == ()
        assert plan.cancel == ()
        assert "can no longer be cancelled" in plan.skipped["d1"]
        with pytest.raises(IllegalTransition):
            cancel(state)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_finished_assignment_does_not_block(state):
    """Rule 3: only an *unfinished* assignment blocks a device; nothing is cancelled."""
    for force in (False, True):
        assert _plan([_cand(aid=41, state=state)], force=force) == DeployPlan(("d1",), (), {})


def test_device_already_running_the_release_is_skipped():
    """Rule 4: a device already running the release is skipped."""
    plan = _plan([_cand(installed=RELEASE), _cand("d2")])
    assert plan.assign == ("d2",)
    assert plan.skipped == {"d1": f"already runs {RELEASE}"}


def test_device_already_running_the_release_keeps_its_assignment_even_with_force():
    """Rule 4: a device already running the release is skipped; nothing of it is cancelled."""
    plan = _plan([_cand(installed=RELEASE, aid=5, state=S.PENDING)], force=True)
    assert plan == DeployPlan((), (), {"d1": f"already runs {RELEASE}"})


def test_first_applicable_reason_wins():
    """Rules 1, 2, 4, 3 are checked in that order; each skipped device carries one reason."""
    models = frozenset({"gw-200"})
    plan = _plan(
        [
            _cand("revoked-incompatible", revoked=True, model="x"),
            _cand("incompatible-current", model="x", installed=RELEASE),
            _cand("current-busy", installed=RELEASE, aid=1, state=S.INSTALLING),
        ],
        models=models,
    )
    assert plan.skipped["revoked-incompatible"] == "device is revoked"
    assert "not compatible" in plan.skipped["incompatible-current"]
    assert plan.skipped["current-busy"] == f"already runs {RELEASE}"


def test_each_device_appears_once_in_the_order_given():
    """Rule 6: each device appears at most once in the plan, in the order given (the first
    occurrence decides)."""
    plan = _plan(
        [
            _cand("c"),
            _cand("a", aid=1, state=S.PENDING),
            _cand("c", revoked=True),
            _cand("b"),
            _cand("a", aid=2, state=S.DOWNLOADING),
        ],
        force=True,
    )
    assert plan == DeployPlan(("c", "a", "b"), (1,), {})


# -- property ---------------------------------------------------------------------------------

candidates = st.builds(
    Candidate,
    device_id=st.sampled_from([f"dev-{i}" for i in range(8)]),
    revoked=st.booleans(),
    hardware_model=st.sampled_from(["", "gw-100", "gw-200", "gw-300"]),
    installed_release=st.sampled_from(["", "base-os@1.0", RELEASE]),
    active_assignment_id=st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
    active_assignment_state=st.one_of(st.none(), st.sampled_from(list(AssignmentState))),
)
model_sets = st.frozensets(st.sampled_from(["gw-100", "gw-200", "gw-300", "gw-400"]), max_size=3)


@given(st.lists(candidates, max_size=20), model_sets, st.booleans())
def test_every_candidate_is_assigned_or_skipped_with_a_reason(cands, models, force):
    """Rules 5 and 6: each device appears at most once, and every candidate is either assigned
    or skipped with a reason an operator can act on."""
    plan = _plan(cands, models=models, force=force)
    first = {}
    for c in cands:
        first.setdefault(c.device_id, c)

    assert len(plan.assign) == len(set(plan.assign))
    assert not set(plan.assign) & set(plan.skipped)
    assert set(plan.assign) | set(plan.skipped) == set(first)
    assert all(isinstance(r, str) and r.strip() for r in plan.skipped.values())
    # Rule 6: in the order given.
    assert list(plan.assign) == [d for d in first if d in plan.assign]

    # The cancellations are exactly the force-replaced, still-cancellable assignments.
    expected_cancel = [
        first[d].active_assignment_id
        for d in plan.assign
        if first[d].active_assignment_state in ACTIVE_STATES
        and first[d].active_assignment_id is not None
    ]
    assert list(plan.cancel) == expected_cancel
    if not force:
        assert plan.cancel == ()

    for d in plan.assign:
        c = first[d]
        assert not c.revoked  # rule 1
        assert not models or c.hardware_model in models  # rule 2
        assert c.installed_release != RELEASE  # rule 4
        if c.active_assignment_id is not None and c.active_assignment_state in ACTIVE_STATES:
            assert force  # rule 3
            assert c.active_assignment_state in CANCELLABLE
