"""Laws of choosing an image delta (core.delta)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleetwarden.core.delta import MAX_SHARE, choose_delta, delta_of, worth_shipping

SHA = st.sampled_from(["a" * 64, "b" * 64, "c" * 64])
META = st.fixed_dictionaries(
    {"delta_of": st.sampled_from(["1", "2", "x", ""]), "delta_base": SHA}
) | st.just({})
CANDIDATES = st.lists(st.tuples(st.integers(10, 99), META), max_size=6)


@given(target=st.sampled_from([1, 2]), base=st.none() | SHA, candidates=CANDIDATES)
def test_a_chosen_delta_rebuilds_the_target_from_the_devices_base(target, base, candidates):
    chosen = choose_delta(target, base, candidates, refused_before=False)
    matching = [i for i, m in candidates if delta_of(m) == target and m.get("delta_base") == base]
    if base is None or not matching:
        assert chosen is None
    else:
        assert chosen == matching[0]


@given(target=st.sampled_from([1, 2]), base=SHA, candidates=CANDIDATES)
def test_after_a_refusal_the_full_image_is_sent(target, base, candidates):
    assert choose_delta(target, base, candidates, refused_before=True) is None


@given(st.integers(0, 10**9), st.integers(1, 10**9))
def test_only_deltas_under_the_share_are_worth_shipping(delta, image):
    assert worth_shipping(delta, image) == (delta < MAX_SHARE * image)


def test_delta_of_reads_only_a_numeric_id():
    assert delta_of({"delta_of": "12"}) == 12
    assert delta_of({"delta_of": "x"}) is None
    assert delta_of({}) is None
