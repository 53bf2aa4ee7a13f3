"""core.certificates: the renewal rule, expiry states, CRL entries, CA retirement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwarden.core.certificates import (
    CrlEntry,
    ExpiryState,
    crl_entries,
    expiry_state,
    renew_at,
    should_renew,
    still_trusted,
)

T0 = datetime(2026, 11, 24, 12, tzinfo=UTC)
moments = st.integers(-(10**8), 10**8).map(lambda s: T0 + timedelta(seconds=s))


def test_a_30_day_certificate_renews_on_day_20():
    """Rule 2: renew when less than a third of the lifetime remains."""
    end = T0 + timedelta(days=30)
    assert not should_renew(T0, end, now=T0 + timedelta(days=19, hours=23), fraction=1 / 3)
    assert should_renew(T0, end, now=T0 + timedelta(days=20), fraction=1 / 3)
    assert should_renew(T0, end, now=end + timedelta(days=1), fraction=1 / 3)


@pytest.mark.parametrize("fraction", [0, 1, -0.5, 2])
def test_the_renew_fraction_must_be_a_share(fraction):
    with pytest.raises(ValueError, match="fraction"):
        renew_at(T0, T0 + timedelta(days=1), fraction=fraction)


@given(start=moments, days=st.integers(1, 3650), fraction=st.floats(0.01, 0.99), now=moments)
def test_renewal_is_monotonic_in_time(start, days, fraction, now):
    """Once a certificate should be renewed, it stays so: the rule never flips back."""
    end = start + timedelta(days=days)
    if should_renew(start, end, now=now, fraction=fraction):
        assert should_renew(start, end, now=now + timedelta(seconds=1), fraction=fraction)
    assert start < renew_at(start, end, fraction=fraction) < end


@given(not_after=moments, now=moments)
def test_expiry_states_partition_time(not_after, now):
    """Rule 3."""
    state = expiry_state(not_after, now=now)
    left = not_after - now
    expected = (
        ExpiryState.EXPIRED
        if left <= timedelta(0)
        else ExpiryState.EXPIRING_7D
        if left < timedelta(days=7)
        else ExpiryState.VALID
    )
    assert state is expected


@given(st.lists(st.tuples(st.integers(1, 2**64), moments), max_size=30), moments)
def test_a_crl_lists_only_unexpired_entries_in_serial_order(rows, now):
    """Rule 4."""
    entries = [CrlEntry(serial, T0, not_after) for serial, not_after in rows]
    listed = crl_entries(entries, now=now)
    assert [e.serial for e in listed] == sorted(e.serial for e in entries if e.not_after > now)


def test_a_previous_ca_is_trusted_until_its_last_certificate_expires():
    """Rule 5."""
    last = T0 + timedelta(days=30)
    assert still_trusted(last, now=last - timedelta(seconds=1))
    assert not still_trusted(last, now=last)
