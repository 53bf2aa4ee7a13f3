"""Risk-aware ordering (fleetwarden.core.rollout.risk): a hierarchical Beta-binomial estimate of
success per (model, from-release, to-release), and the order devices go in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwarden.core.rollout.risk import (
    Candidate,
    Outcomes,
    RiskModel,
    criticality_rank,
    history_from,
    order,
)

MODELS = ("rpi4", "x86", "jetson")
RELEASES = ("1.0", "1.1", "2.0")
keys = st.tuples(st.sampled_from(MODELS), st.sampled_from(RELEASES), st.sampled_from(RELEASES))
#: Counts a fleet can produce per key (a million outcomes); see the saturation test below.
counts = st.integers(0, 10**6)
outcomes = st.builds(Outcomes, counts, counts)
histories = st.dictionaries(keys, outcomes, max_size=8)
criticalities = st.none() | st.sampled_from(
    ("low", "medium", "normal", "high", "critical", " High ", "LOW", "0", "2.5", "7", "unknown")
)


@settings(max_examples=200)
@given(histories, keys)
def test_every_estimate_lies_strictly_between_0_and_1(history, key):
    """Rule 1: every estimate lies strictly between 0 and 1."""
    e = RiskModel(history).estimate(*key)
    assert 0 < e.success < 1
    assert 0 < e.risk < 1
    seen = history.get(key, Outcomes())
    assert e.observed == seen.succeeded + seen.failed


@settings(max_examples=200)
@given(histories, keys, keys, st.integers(1, 10**4))
def test_more_successes_never_lower_and_more_failures_never_raise(history, key, other, n):
    """Rule 2: more successes never lower an estimate; more failures never raise it — whether
    they are of this very (model, from, to) or of another that feeds the release's prior."""
    before = RiskModel(history).estimate(*key).success
    base = history.get(other, Outcomes())
    succ = RiskModel({**history, other: base + Outcomes(n, 0)}).estimate(*key).success
    fail = RiskModel({**history, other: base + Outcomes(0, n)}).estimate(*key).success
    assert succ >= before >= fail
    if other[2] != key[2]:
        assert succ == before == fail  # another release tells nothing about this one
    elif sum(o.succeeded + o.failed for k, o in history.items() if k[2] == key[2]) <= 10**4:
        assert succ > before > fail  # same release: it moves (visibly, with modest counts)


def test_unknown_release_starts_at_the_global_prior_and_a_new_combination_inherits():
    """A release never seen starts at the global prior (90%); a combination never seen inherits
    what is known about its release."""
    model = RiskModel({("x86", "1.0", "2.0"): Outcomes(0, 10)})
    assert model.estimate("rpi4", "1.0", "3.0").success == pytest.approx(0.9)
    assert model.estimate("rpi4", "1.0", "3.0").observed == 0
    inherited = model.estimate("rpi4", "1.1", "2.0")
    assert inherited.success == pytest.approx(0.45)  # (9 + 0) / (10 + 10)
    assert inherited.observed == 0
    seen = model.estimate("x86", "1.0", "2.0")
    assert seen.success == pytest.approx(4.5 / 20)  # prior 4.5 : 5.5, then 0 of 10
    assert seen.observed == 10


def test_estimate_stays_below_1_for_huge_counts():
    """Rule 1 at the extreme: 10**9 successes, no failure, of one key."""
    e = RiskModel({("x86", "1.0", "2.0"): Outcomes(10**9, 0)}).estimate("x86", "1.0", "2.0")
    assert e.success < 1
    assert e.risk > 0


candidates = st.lists(
    st.builds(
        Candidate,
        device_id=st.text("abcdef0123", min_size=1, max_size=6),
        hardware_model=st.sampled_from(MODELS),
        from_release=st.sampled_from(RELEASES),
        criticality=criticalities,
    ),
    unique_by=lambda c: c.device_id,
    max_size=30,
)


@settings(max_examples=200)
@given(candidates, histories, st.sampled_from(RELEASES), st.booleans())
def test_order_is_a_permutation_low_criticality_then_high_success_first(cs, history, to, use):
    """Rule 3: order is a permutation of its input. Low business criticality first, then low
    predicted risk (high success probability), then device id for a stable order."""
    model = RiskModel(history) if use else None
    ids = order(cs, to_release=to, model=model)
    assert sorted(ids) == sorted(c.device_id for c in cs)
    assert len(ids) == len(set(ids))
    by_id = {c.device_id: c for c in cs}

    def key(c: Candidate) -> tuple[float, float, str]:
        p = model.estimate(c.hardware_model, c.from_release, to).success if model else 0.0
        return criticality_rank(c.criticality), -p, c.device_id

    keyed = [key(by_id[d]) for d in ids]
    assert keyed == sorted(keyed)
    assert order(list(reversed(cs)), to_release=to, model=model) == ids  # input order is irrelevant


def test_order_by_example():
    """Low criticality first; then the model with the better record; then the id."""
    model = RiskModel({("good", "1", "2"): Outcomes(50, 0), ("bad", "1", "2"): Outcomes(5, 5)})
    cs = [
        Candidate("z-critical", "good", "1", "critical"),
        Candidate("b-bad", "bad", "1"),
        Candidate("a-bad", "bad", "1", "medium"),
        Candidate("y-good", "good", "1"),
        Candidate("x-low-bad", "bad", "1", "low"),
    ]
    assert order(cs, to_release="2", model=model) == [
        "x-low-bad",
        "y-good",
        "a-bad",
        "b-bad",
        "z-critical",
    ]


@pytest.mark.parametrize(
    ("value", "rank"),
    [
        (None, 1.0),
        ("low", 0.0),
        ("Medium", 1.0),
        ("normal", 1.0),
        (" HIGH ", 2.0),
        ("critical", 3.0),
        ("0.5", 0.5),
        ("10", 10.0),
        ("whatever", 1.0),
    ],
)
def test_criticality_rank(value, rank):
    """Criticality is a number or one of low, medium, high, critical; missing counts as medium."""
    assert criticality_rank(value) == rank


def test_history_from_folds_rows_per_key():
    rows = [
        ("m", "1", "2", True),
        ("m", "1", "2", False),
        ("m", "1", "2", True),
        ("n", "1", "2", False),
    ]
    assert history_from(rows) == {("m", "1", "2"): Outcomes(2, 1), ("n", "1", "2"): Outcomes(0, 1)}
