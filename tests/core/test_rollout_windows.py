"""Maintenance windows (fleetwarden.core.rollout.windows): cron + duration + zone, across DST."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwarden.core.rollout.windows import Window, any_open, next_open
from fleetwarden.errors import InputError

BERLIN = ZoneInfo("Europe/Berlin")
HOUR = timedelta(hours=1)
SPRING_FORWARD = datetime(2026, 3, 29, tzinfo=UTC)  # 02:00 CET -> 03:00 CEST at 01:00 UTC
FALL_BACK = datetime(2026, 10, 25, tzinfo=UTC)  # 03:00 CEST -> 02:00 CET at 01:00 UTC


def utc(day: datetime, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return day.replace(hour=hh, minute=mm, second=ss)


def open_minutes(w: Window, day: datetime) -> list[datetime]:
    """Every minute of the first 12 hours of the UTC day at which ``w`` is open."""
    minutes = (day + timedelta(minutes=i) for i in range(12 * 60))
    return [t for t in minutes if w.is_open(t)]


def instant(t: datetime) -> datetime:
    """As UTC: an ambiguous local time never compares equal across zones (PEP 495)."""
    return t.astimezone(UTC)


def span(start: datetime, end: datetime) -> list[datetime]:
    return [start + timedelta(minutes=i) for i in range(int((end - start) / timedelta(minutes=1)))]


# -- rule 5: bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cron",
    ["", "bogus", "* * * *", "60 * * * *", "* 24 * * *", "0 0 32 * *", "0 0 * 13 *", "0 0 30 2 *"],
)
def test_invalid_cron_is_an_input_error(cron):
    """Rule 5: a bad schedule is an InputError naming the problem."""
    with pytest.raises(InputError, match="cron"):
        Window(cron, HOUR)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../../etc/passwd", "Europe/", "CEST"])
def test_unknown_zone_is_an_input_error(zone):
    """Rule 5: a bad zone is an InputError naming the problem."""
    with pytest.raises(InputError, match="time zone"):
        Window("0 2 * * *", HOUR, zone)


@pytest.mark.parametrize(
    "duration",
    [timedelta(0), timedelta(seconds=59), -HOUR, timedelta(days=7, seconds=1), timedelta(days=30)],
)
def test_duration_out_of_range_is_an_input_error(duration):
    """Rule 5: a bad duration (not between 1 minute and 7 days) is an InputError."""
    with pytest.raises(InputError, match="duration"):
        Window("0 2 * * *", duration)


@pytest.mark.parametrize("duration", [timedelta(minutes=1), timedelta(days=7)])
def test_duration_bounds_are_accepted(duration):
    assert Window("0 2 * * *", duration, "Europe/Berlin").duration == duration


# -- rules 3 and 4 against arithmetic ----------------------------------------------------------


@dataclass(frozen=True)
class Daily:
    """ "M H * * [dow]" in a zone without daylight saving: starts computable by arithmetic."""

    minute: int
    hour: int | None  # None: every hour
    weekday: int | None  # cron numbering, 0 = Sunday; only with an hour
    duration: timedelta
    zone: str

    def window(self) -> Window:
        hour = "*" if self.hour is None else self.hour
        dow = "*" if self.weekday is None else self.weekday
        return Window(f"{self.minute} {hour} * * {dow}", self.duration, self.zone)

    def last_start(self, now: datetime) -> datetime:
        local = now.astimezone(ZoneInfo(self.zone))
        start = local.replace(minute=self.minute, second=0, microsecond=0)
        if self.hour is None:
            return start if start <= local else start - HOUR
        start = start.replace(hour=self.hour)
        while start > local or (
            self.weekday is not None and (start.weekday() + 1) % 7 != self.weekday
        ):
            start -= timedelta(days=1)
        return start

    def next_start(self, now: datetime) -> datetime:
        period = HOUR if self.hour is None else timedelta(days=1 if self.weekday is None else 7)
        return self.last_start(now) + period


dailies = st.builds(
    Daily,
    minute=st.integers(0, 59),
    hour=st.none() | st.integers(0, 23),
    weekday=st.none() | st.integers(0, 6),
    duration=st.integers(1, 7 * 24 * 60).map(lambda m: timedelta(minutes=m)),
    zone=st.sampled_from(("UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/Bogota")),
).filter(lambda d: d.hour is not None or d.weekday is None)
instants = st.integers(0, 2 * 365 * 86400 * 10**6).map(
    lambda us: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
)


@settings(max_examples=200, deadline=None)
@given(dailies, instants)
def test_open_exactly_when_a_start_lies_within_duration_before_now(d, now):
    """Rule 3: a window is open at now when some start s satisfies s <= now < s + duration;
    the schedule is read in the window's own zone (rule 1); next_open is now when open, else
    the next start."""
    w = d.window()
    start = d.last_start(now)
    assert w.is_open(now) == (now < start + d.duration)
    assert w.next_open(now) == (now if w.is_open(now) else d.next_start(now))


@settings(max_examples=100, deadline=None)
@given(st.lists(dailies, max_size=3), instants)
def test_any_open_is_one_of_the_windows_open(ds, now):
    """Rule 4: a device with no windows may install at any time; with several, when any is
    open. next_open of several is the earliest."""
    ws = [d.window() for d in ds]
    assert any_open(ws, now) == (not ws or any(w.is_open(now) for w in ws))
    assert next_open(ws, now) == min((w.next_open(now) for w in ws), default=now)


def test_no_windows_means_always_open():
    """Rule 4: a device with no windows may install at any time."""
    now = datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert any_open([], now) is True
    assert any_open(iter(()), now) is True
    assert next_open([], now) == now


def test_boundaries_are_half_open():
    """Rule 3: open from the start (inclusive) to start + duration (exclusive)."""
    w = Window("0 2 * * *", HOUR)
    day = datetime(2026, 7, 1, tzinfo=UTC)
    assert not w.is_open(utc(day, 1, 59, 59))
    assert w.is_open(utc(day, 2))
    assert w.is_open(day.replace(hour=2, minute=59, second=59, microsecond=999_999))
    assert not w.is_open(utc(day, 3))
    assert w.next_open(utc(day, 3)) == utc(day + timedelta(days=1), 2)


# -- rules 1 and 2 across daylight saving (Europe/Berlin) ---------------------------------------


@pytest.mark.parametrize(
    ("day", "start_utc"),
    [
        (datetime(2026, 1, 15, tzinfo=UTC), 1),  # CET, UTC+1
        (datetime(2026, 7, 15, tzinfo=UTC), 0),  # CEST, UTC+2
    ],
)
def test_schedule_is_read_in_the_windows_zone_all_year(day, start_utc):
    """Rule 1: "0 2 * * *" in Europe/Berlin means 02:00 Berlin time all year."""
    w = Window("0 2 * * *", HOUR, "Europe/Berlin")
    assert open_minutes(w, day) == span(utc(day, start_utc), utc(day, start_utc + 1))


def test_spring_forward_start_runs_at_the_first_instant_that_exists():
    """Rules 1 and 2: on 2026-03-29 02:30 Berlin does not exist; the window starts at 03:00
    CEST (01:00 UTC) and, 1 h being elapsed time, closes at 02:00 UTC. The nights around it
    start at 02:30 CET (01:30 UTC) and 02:30 CEST (00:30 UTC)."""
    w = Window("30 2 * * *", HOUR, "Europe/Berlin")
    day = SPRING_FORWARD
    assert open_minutes(w, day) == span(utc(day, 1), utc(day, 2))
    assert instant(w.next_open(day)) == utc(day, 1)
    assert w.next_open(day).astimezone(BERLIN).hour == 3
    before, after = day - timedelta(days=1), day + timedelta(days=1)
    assert open_minutes(w, before) == span(utc(before, 1, 30), utc(before, 2, 30))
    assert open_minutes(w, after) == span(utc(after, 0, 30), utc(after, 1, 30))


def test_duration_across_spring_forward_is_elapsed_time():
    """Rule 2: "3h" is three real hours: a 01:30 CET (00:30 UTC) start closes at 03:30 UTC,
    which is 05:30 CEST on the wall clock."""
    w = Window("30 1 * * *", timedelta(hours=3), "Europe/Berlin")
    day = SPRING_FORWARD
    assert open_minutes(w, day) == span(utc(day, 0, 30), utc(day, 3, 30))


def test_fall_back_start_runs_once_at_the_first_occurrence():
    """Rules 1 and 3: on 2026-10-25 02:30 Berlin happens twice (00:30 and 01:30 UTC); cron runs
    once, at the first. So the window is open at 00:30 UTC and not at the repeated 02:30."""
    w = Window("30 2 * * *", HOUR, "Europe/Berlin")
    day = FALL_BACK
    assert instant(w.next_open(day)) == utc(day, 0, 30)
    assert not w.is_open(utc(day, 0, 29, 59))
    assert w.is_open(utc(day, 0, 30))
    assert w.is_open(utc(day, 1, 29, 59))
    for t in span(utc(day, 1, 30), utc(day, 2)):  # the repeated 02:30-03:00 wall-clock time
        assert not w.is_open(t), t
    assert instant(w.next_open(utc(day, 1, 30))) == utc(day + timedelta(days=1), 1, 30)


@pytest.mark.parametrize("duration", [timedelta(minutes=1), HOUR, timedelta(hours=3)])
def test_duration_across_fall_back_is_elapsed_time(duration):
    """Rule 2: the duration is elapsed time even across the fall-back change: a window starting
    at 02:30 CEST (00:30 UTC) closes exactly ``duration`` later, and does not run again at the
    repeated 02:30 CET."""
    w = Window("30 2 * * *", duration, "Europe/Berlin")
    day = FALL_BACK
    start = utc(day, 0, 30)
    assert open_minutes(w, day) == span(start, start + duration)


@pytest.mark.parametrize(
    "now",
    [
        utc(SPRING_FORWARD, 1, 45),  # window 01:00-02:00 UTC, open
        utc(FALL_BACK, 1, 45),  # window 00:30-01:30 UTC, closed
    ],
)
def test_open_depends_on_the_instant_not_on_the_zone_of_now(now):
    """Rules 2 and 3 are about instants: is_open(now) must not change when the same instant is
    given in another zone (here Europe/Berlin, across its DST changes)."""
    w = Window("30 2 * * *", HOUR, "Europe/Berlin")
    assert w.is_open(now.astimezone(BERLIN)) == w.is_open(now)
