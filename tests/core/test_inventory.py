"""Inventory fingerprints and the attributes a selector can see."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from fleetwarden.core.inventory import fingerprint, selector_attributes

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
documents = st.dictionaries(st.text(max_size=8), json_values, max_size=8)


def _reordered(value):
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


@given(documents)
def test_fingerprint_ignores_key_order(document):
    """Rule 1: fingerprint depends only on content, not on key order."""
    assert fingerprint(_reordered(document)) == fingerprint(document)
    assert len(fingerprint(document)) == 64
    int(fingerprint(document), 16)


@given(documents, st.text(max_size=8), json_values)
def test_fingerprint_changes_with_content(document, key, value):
    """Rule 1: an inventory whose content changed has another fingerprint (so it is re-sent)."""
    changed = dict(document)
    changed[key] = [value, "changed"]
    assume(document.get(key) != changed[key])
    assert fingerprint(changed) != fingerprint(document)


def test_fingerprint_example():
    """Rule 1: the agent and the server compute it independently and compare."""
    a = {"hostname": "gw-1", "labels": {"site": "berlin", "zone": "eu-1"}, "packages": []}
    b = {"packages": [], "labels": {"zone": "eu-1", "site": "berlin"}, "hostname": "gw-1"}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(a | {"hostname": "gw-2"})
    assert fingerprint({"packages": [1, 2]}) != fingerprint({"packages": [2, 1]})


def test_selector_attributes_example():
    """Rule 2: labels as given, plus the well-known facts; None facts are absent."""
    attrs = selector_attributes(
        device_id="dev-1",
        name="gw-1",
        labels={"canary": "true"},
        facts={"site": "berlin", "model": "gw-200", "kernel": None},
    )
    assert attrs == {
        "id": "dev-1",
        "name": "gw-1",
        "site": "berlin",
        "model": "gw-200",
        "canary": "true",
    }


def test_label_wins_over_a_fact_of_the_same_name():
    """Rule 2: a label wins over a fact of the same name (including id and name)."""
    attrs = selector_attributes(
        device_id="dev-1",
        name="gw-1",
        labels={"site": "lab", "name": "custom", "id": "x"},
        facts={"site": "berlin"},
    )
    assert attrs["site"] == "lab"
    assert attrs["name"] == "custom"
    assert attrs["id"] == "x"


@given(
    st.text(max_size=10),
    st.text(max_size=10),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=5),
    st.dictionaries(st.text(max_size=6), st.one_of(st.none(), st.text(max_size=6)), max_size=5),
)
def test_selector_attributes_property(device_id, name, labels, facts):
    """Rule 2: labels win; then id and name; then non-None facts."""
    attrs = selector_attributes(device_id=device_id, name=name, labels=labels, facts=facts)
    for key, value in attrs.items():
        if key in labels:
            assert value == labels[key]
        elif key == "id":
            assert value == device_id
        elif key == "name":
            assert value == name
        else:
            assert facts[key] == value
    assert set(attrs) == set(labels) | {"id", "name"} | {
        k for k, v in facts.items() if v is not None
    }
