"""Device certificate lifecycle decisions: when to renew, how near expiry, what a CRL lists.

Rules:
  1. Nothing here reads a clock: ``now`` is a parameter (aware UTC).
  2. A device renews when less than ``renew_fraction`` of its certificate's lifetime remains
     (default a third: day 20 of a 30-day certificate), or when the certificate has expired
     (renewal then fails on the server, and the agent reports it; nothing is gained by
     waiting).
  3. Expiry states partition certificates: ``expired`` (``not_after <= now``),
     ``expiring_7d`` (less than seven days left), ``valid`` (the rest).
  4. A CRL lists every revoked or superseded certificate of its issuer that has not expired
     yet (RFC 5280 §3.3 lets a CRL drop entries once the certificate expired: an expired
     certificate is refused anyway), ordered by serial so equal state gives equal content.
  5. A previous CA stays trusted until the last certificate it issued expires; once nothing
     it issued can still be valid, it is retired.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = [
    "DEFAULT_RENEW_FRACTION",
    "EXPIRING_WINDOW",
    "CrlEntry",
    "ExpiryState",
    "crl_entries",
    "expiry_state",
    "renew_at",
    "should_renew",
    "still_trusted",
]

DEFAULT_RENEW_FRACTION = 1 / 3
EXPIRING_WINDOW = timedelta(days=7)


class ExpiryState(StrEnum):
    EXPIRED = "expired"
    EXPIRING_7D = "expiring_7d"
    VALID = "valid"


def renew_at(not_before: datetime, not_after: datetime, *, fraction: float) -> datetime:
    """The moment from which a certificate should be renewed (rule 2)."""
    if not 0 < fraction < 1:
        raise ValueError("renew fraction must lie strictly between 0 and 1")
    return not_after - (not_after - not_before) * fraction


def should_renew(
    not_before: datetime, not_after: datetime, *, now: datetime, fraction: float
) -> bool:
    """True when less than ``fraction`` of the lifetime remains (rule 2)."""
    return now >= renew_at(not_before, not_after, fraction=fraction)


def expiry_state(not_after: datetime, *, now: datetime) -> ExpiryState:
    """Rule 3."""
    if not_after <= now:
        return ExpiryState.EXPIRED
    if not_after - now < EXPIRING_WINDOW:
        return ExpiryState.EXPIRING_7D
    return ExpiryState.VALID


@dataclass(frozen=True, slots=True)
class CrlEntry:
    serial: int
    revoked_at: datetime
    not_after: datetime
    #: "superseded" for certificates replaced by a renewal; "" when no reason is given.
    reason: str = ""


def crl_entries(entries: Iterable[CrlEntry], *, now: datetime) -> list[CrlEntry]:
    """What a CRL lists (rule 4)."""
    return sorted((e for e in entries if e.not_after > now), key=lambda e: e.serial)


def still_trusted(last_issued_not_after: datetime, *, now: datetime) -> bool:
    """Rule 5: a previous CA is trusted while something it issued can still be valid."""
    return now < last_issued_not_after
