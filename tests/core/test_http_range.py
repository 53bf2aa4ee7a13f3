"""HTTP Range (RFC 9110 §14) for resumable artifact downloads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwarden.core.http_range import parse_range
from fleetwarden.errors import InputError, RangeNotSatisfiable

sizes = st.one_of(st.integers(min_value=0, max_value=64), st.integers(min_value=0, max_value=2**40))
positions = st.one_of(
    st.integers(min_value=0, max_value=80),
    st.integers(min_value=0, max_value=2**63),
)


def _check(header, size):
    """Call parse_range; check the span invariant, or that the only error is RangeNotSatisfiable."""
    try:
        span = parse_range(header, size)
    except RangeNotSatisfiable as e:
        error = e
    else:
        error = None
    if error is not None:
        assert error.size == size
        assert isinstance(error, InputError)
        return "unsatisfiable"
    if span is not None:
        start, stop = span
        assert isinstance(start, int)
        assert isinstance(stop, int)
        assert 0 <= start < stop <= size
    return span


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-", (0, 10)),
        ("bytes=5-", (5, 10)),
        ("bytes=9-", (9, 10)),
        ("bytes=0-0", (0, 1)),
        ("bytes=5-9", (5, 10)),
        ("bytes=0-9", (0, 10)),
        ("bytes=2-4", (2, 5)),
        ("bytes=-3", (7, 10)),
        ("bytes=-1", (9, 10)),
        ("bytes=-10", (0, 10)),
    ],
)
def test_satisfiable_ranges(header, expected):
    """Rule 3: the returned span is half-open [start, stop) (RFC 9110 §14.1.2 byte ranges)."""
    assert parse_range(header, 10) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=5-10", (5, 10)),
        ("bytes=5-99999", (5, 10)),
        ("bytes=0-9999999999999999999", (0, 10)),
        ("bytes=-11", (0, 10)),
        ("bytes=-99999", (0, 10)),
    ],
)
def test_positions_beyond_the_end_are_clamped(header, expected):
    """Rule 3: a last-byte position beyond the end is clamped to the end (§14.1.2); a suffix
    longer than the content selects all of it (§14.1.3)."""
    assert parse_range(header, 10) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10-", 10),
        ("bytes=10-20", 10),
        ("bytes=11-", 10),
        ("bytes=0-", 0),
        ("bytes=0-5", 0),
        ("bytes=-0", 10),
        ("bytes=-5", 0),
    ],
)
def test_unsatisfiable_ranges(header, size):
    """Rules 2 and 4: a single well-formed range starting at or beyond the end, and ``-0``,
    raise RangeNotSatisfiable carrying the size (for ``Content-Range: bytes */size``)."""
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.size == size


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=0-1,3-4",
        "bytes=0-1, 5-",
        "bytes=-1,-2",
        "items=0-1",
        "lines=1-2",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=1-a",
        "bytes=0x1-2",
        "bytes=+1-2",
        "bytes=1--2",
        "bytes=5-3",
        "bytes=1.5-2",
        "0-1",
        "bytes=1-2;q=1",
        "bytes=1-2 garbage",
        "bytes=" + "1" * 20 + "-",
        "bytes=0-" + "9" * 20,
        "bytes=-" + "1" * 20,
    ],
)
def test_odd_headers_are_ignored(header):
    """Rule 1: other units, several ranges and garbage are ignored (``None``: serve the whole
    content), as RFC 9110 §14.2 allows; so is last < first (§14.1.2: invalid)."""
    assert parse_range(header, 10) is None


@given(positions, st.one_of(st.none(), positions), sizes)
def test_single_ranges_follow_rfc_9110(first, last, size):
    """Rules 2 and 3 against RFC 9110 §14.1.2 for ``bytes=first-[last]``."""
    header = f"bytes={first}-" + ("" if last is None else str(last))
    outcome = _check(header, size)
    if last is not None and last < first:
        assert outcome is None
    elif first >= size:
        assert outcome == "unsatisfiable"
    else:
        stop = size if last is None else min(last + 1, size)
        assert outcome == (first, stop)


@given(positions, sizes)
def test_suffix_ranges_follow_rfc_9110(suffix, size):
    """Rule 4: ``bytes=-N`` is the last N bytes; ``-0`` (or empty content) is unsatisfiable."""
    outcome = _check(f"bytes=-{suffix}", size)
    if suffix == 0 or size == 0:
        assert outcome == "unsatisfiable"
    else:
        assert outcome == (max(0, size - suffix), size)


@given(st.text(), sizes)
def test_arbitrary_header_text(header, size):
    """Rule 3: any returned span lies within [0, size]; the only error is RangeNotSatisfiable."""
    _check(header, size)


@given(st.text(alphabet="bytes=-0123456789, \t;*", max_size=30), sizes)
def test_range_like_header_text(header, size):
    """Rule 3: any returned span lies within [0, size]; the only error is RangeNotSatisfiable."""
    _check(header, size)


@given(
    st.lists(
        st.tuples(st.one_of(st.none(), positions), st.one_of(st.none(), positions)),
        min_size=2,
        max_size=4,
    ),
    sizes,
)
def test_several_ranges_are_ignored(ranges, size):
    """Rule 1: only a single range is honoured; a list of ranges serves the whole content."""
    spec = ",".join(f"{'' if a is None else a}-{'' if b is None else b}" for a, b in ranges)
    assert parse_range(f"bytes={spec}", size) is None
