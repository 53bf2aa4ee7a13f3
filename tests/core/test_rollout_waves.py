"""Splitting the ordered targets into waves (fleetwarden.core.rollout.waves), and the strategy's
sizes (canary, wave kinds, budget limit, rate limit)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwarden.core.rollout.strategy import Budget, Canary, RateLimit, WaveKind, WaveSpec
from fleetwarden.core.rollout.waves import plan_waves, wave_sizes

# Within the ranges the wire form (protocol.rollouts.StrategySpec) accepts.
canaries = st.builds(
    Canary,
    count=st.none() | st.integers(0, 50),
    percent=st.none() | st.floats(0, 100),
)
specs = st.one_of(
    st.builds(WaveSpec, kind=st.just(WaveKind.PERCENT), size=st.floats(0.01, 100)),
    st.builds(WaveSpec, kind=st.just(WaveKind.FIXED), size=st.floats(0.01, 1_000)),
    st.builds(
        WaveSpec,
        kind=st.just(WaveKind.EXPONENTIAL),
        size=st.floats(0.01, 50),
        factor=st.floats(1, 10),
    ),
)


@st.composite
def targets(draw) -> tuple[list[str], set[str]]:
    ordered = draw(
        st.lists(st.integers(0, 10_000).map(lambda i: f"dev-{i}"), unique=True, max_size=300)
    )
    strangers = {"not-a-target", "dev-x"}
    matches = set(draw(st.lists(st.sampled_from([*ordered, *strangers])))) if ordered else set()
    return ordered, matches


PROPS = settings(max_examples=200, deadline=None)


@PROPS
@given(targets(), canaries, specs)
def test_waves_are_disjoint_cover_every_target_and_none_is_empty(t, canary, spec):
    """Rules 1 and 4: waves are disjoint and together contain every target exactly once; no
    wave is empty."""
    ordered, matches = t
    waves = plan_waves(ordered, canary=canary, canary_matches=matches, spec=spec)
    flat = [d for w in waves for d in w]
    assert len(flat) == len(set(flat))
    assert sorted(flat) == sorted(ordered)
    assert all(waves)


@PROPS
@given(targets(), canaries, specs)
def test_canary_comes_first_preferring_selector_matches_in_order(t, canary, spec):
    """Rule 2: the canary is wave 0 when it is non-empty; devices matching the canary selector
    fill it first (in the given order), the rest of it comes from the front of the order."""
    ordered, matches = t
    waves = plan_waves(ordered, canary=canary, canary_matches=matches, spec=spec)
    n = canary.size(len(ordered))
    if n == 0:
        assert [d for w in waves for d in w] == ordered  # no canary: only the order counts
        return
    preferred = [d for d in ordered if d in matches][:n]
    fill = [d for d in ordered if d not in preferred][: n - len(preferred)]
    assert waves[0] == preferred + fill


@PROPS
@given(targets(), canaries, specs)
def test_waves_after_the_canary_keep_the_order(t, canary, spec):
    """Rule 3: apart from the canary, waves keep the given order: wave k never holds a device
    that comes after one in wave k+1."""
    ordered, matches = t
    waves = plan_waves(ordered, canary=canary, canary_matches=matches, spec=spec)
    rest = waves[1:] if canary.size(len(ordered)) else waves
    in_canary = set(waves[0]) if waves and rest is not waves else set()
    assert [d for w in rest for d in w] == [d for d in ordered if d not in in_canary]


@PROPS
@given(st.integers(0, 5_000), specs)
def test_wave_sizes_add_up_and_follow_their_kind(total, spec):
    """Sizes of the waves after the canary: they add up to the total, each at least 1, at most
    1000 waves; percent waves are equal (relative to the whole set, not to what remains),
    fixed waves have ``size`` devices, exponential ones grow by ``factor``; only the last wave
    may fall short."""
    sizes = wave_sizes(spec, total)
    assert sum(sizes) == total
    assert all(n >= 1 for n in sizes)
    assert len(sizes) <= 1000
    if len(sizes) < 2:
        return
    body, last = sizes[:-1], sizes[-1]
    if spec.kind is WaveKind.PERCENT:
        step = max(1, math.ceil(total * spec.size / 100))
        assert set(body) == {step}
    elif spec.kind is WaveKind.FIXED:
        step = max(1, math.ceil(spec.size))
        assert set(body) == {step}
    else:
        assert body[0] == max(1, math.ceil(spec.size))
        assert body == sorted(body)
        step = last
    assert last <= step or len(sizes) == 1000  # the 1000th wave takes the rest


def test_default_strategy_waves():
    """Defaults: a canary of 1% (at least one device), then waves of 25% of the targets."""
    ordered = [f"d{i:03d}" for i in range(200)]
    waves = plan_waves(ordered, canary=Canary(), canary_matches=(), spec=WaveSpec())
    assert [len(w) for w in waves] == [2, 50, 50, 50, 48]
    assert waves[0] == ["d000", "d001"]


def test_canary_selector_matches_fill_the_canary_first():
    ordered = ["a", "b", "c", "d", "e"]
    waves = plan_waves(
        ordered, canary=Canary(count=3), canary_matches={"d", "z"}, spec=WaveSpec(WaveKind.FIXED, 1)
    )
    assert waves == [["d", "a", "b"], ["c"], ["e"]]


def test_exponential_waves_grow_by_the_factor():
    assert wave_sizes(WaveSpec(WaveKind.EXPONENTIAL, 1, factor=2), 20) == [1, 2, 4, 8, 5]
    assert wave_sizes(WaveSpec(WaveKind.EXPONENTIAL, 3, factor=1), 7) == [3, 3, 1]


def test_no_targets_no_waves():
    assert plan_waves([], canary=Canary(count=5), canary_matches={"x"}, spec=WaveSpec()) == []


def test_at_most_a_thousand_waves():
    sizes = wave_sizes(WaveSpec(WaveKind.FIXED, 1), 1500)
    assert len(sizes) == 1000
    assert sizes[-1] == 501


# -- sizes in the strategy ---------------------------------------------------------------------


@given(canaries, st.integers(0, 100_000))
def test_canary_size(canary, total):
    """``count`` wins over ``percent``; a percent canary has at least one device; never more
    than the targets."""
    n = canary.size(total)
    assert 0 <= n <= total
    if total == 0:
        assert n == 0
    elif canary.count is not None:
        assert n == min(canary.count, total)
    elif canary.percent is None or canary.percent <= 0:
        assert n == 0
    else:
        assert n == max(1, math.ceil(total * canary.percent / 100))


@pytest.mark.parametrize(
    ("budget", "group", "limit"),
    [
        (Budget(), 10, 1),
        (Budget(max_in_progress=3), 2, 3),
        (Budget(max_in_progress=None, max_percent=10), 25, 3),
        (Budget(max_in_progress=None, max_percent=10), 3, 1),
        (Budget(max_in_progress=2, max_percent=50), 10, 2),
        (Budget(max_in_progress=None, max_percent=None), 7, 7),
    ],
)
def test_budget_limit(budget, group, limit):
    """At most max_in_progress devices, or max_percent of the group rounded up, at least one."""
    assert budget.limit(group) == limit


@given(
    st.integers(1, 1000),
    st.floats(1.1, 5),
    st.integers(1, 10),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
)
def test_rate_grows_stepwise_and_never_shrinks(per_minute, factor, every, notified, more):
    """RateLimit: times the factor after every ``increase_every`` devices notified; capped."""
    rate = RateLimit(per_minute, factor, every)
    now, later = rate.current(notified, 0), rate.current(notified + more, 0)
    assert per_minute <= now <= later <= max(per_minute, 1_000_000)
    if notified < every:
        assert now == per_minute
    counting_succeeded = RateLimit(per_minute, factor, every, count_succeeded=True)
    assert counting_succeeded.current(notified, 0) == per_minute


def test_rate_without_limit_or_growth():
    assert RateLimit().current(5, 5) is None
    assert RateLimit(per_minute=7).current(10**6, 10**6) == 7
    assert RateLimit(per_minute=10, increment_factor=2, increase_every=5).current(12, 0) == 40
