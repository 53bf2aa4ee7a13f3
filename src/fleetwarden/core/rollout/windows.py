"""Maintenance windows: a cron schedule, a duration and an IANA time zone.

Rules:
  1. The schedule is read in the window's own time zone, so "0 2 * * *" in Europe/Berlin means
     02:00 Berlin time all year. Across daylight-saving changes cron's usual semantics hold (a
     02:30 start on the spring-forward night runs at 03:00, the first instant that exists; on
     the fall-back night it runs once).
  2. The duration is elapsed time: "3h" is three real hours, even across a DST change.
  3. A window is open at ``now`` when some start ``s`` satisfies ``s <= now < s + duration``.
  4. A device with no windows may install at any time; with several, when any is open.
  5. A bad schedule, zone or duration is an ``InputError`` naming the problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from fleetwarden.errors import InputError

__all__ = ["Window", "any_open", "next_open"]

_MAX_DURATION = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Window:
    cron: str
    duration: timedelta
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if not timedelta(minutes=1) <= self.duration <= _MAX_DURATION:
            raise InputError("window duration must be between 1 minute and 7 days")
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise InputError(f"unknown time zone {self.timezone!r}") from e
        try:
            CronSim(self.cron, datetime(2026, 1, 1, tzinfo=zone))
        except (CronSimError, ValueError) as e:
            raise InputError(f"invalid cron expression {self.cron!r}: {e}") from e

    def _first_start_after(self, after: datetime) -> datetime:
        """The first start strictly after the instant ``after``, in UTC.

        Arithmetic and comparisons are on instants (UTC): an aware datetime in a zone with DST
        subtracts wall-clock time, and cron searches from a local time inside the repeated
        fall-back hour restart at its first occurrence, which lies *before* ``after``.
        """
        after = after.astimezone(UTC)
        for i, start in enumerate(CronSim(self.cron, after.astimezone(ZoneInfo(self.timezone)))):
            instant = start.astimezone(UTC)
            if instant > after:
                return instant
            if i > 4:  # pragma: no cover - cron yields increasing local times
                break
        raise InputError(f"window {self.cron!r} never starts after {after:%Y-%m-%d %H:%M}")

    def is_open(self, now: datetime) -> bool:
        """Rule 3."""
        now = now.astimezone(UTC)
        return self._first_start_after(now - self.duration) <= now

    def next_open(self, now: datetime) -> datetime:
        """``now`` if open, else the next start (in UTC)."""
        if self.is_open(now):
            return now
        return self._first_start_after(now)


def any_open(windows: Iterable[Window], now: datetime) -> bool:
    """Rule 4."""
    seen = False
    for w in windows:
        seen = True
        if w.is_open(now):
            return True
    return not seen


def next_open(windows: Iterable[Window], now: datetime) -> datetime:
    starts = [w.next_open(now) for w in windows]
    return min(starts) if starts else now
