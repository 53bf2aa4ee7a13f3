"""One planner tick (fleetwarden.core.rollout.planner): rules 1-9 as properties over random
rollouts, checked against an independent reading of the rules, plus a simulation that runs a
rollout where nothing fails until it finishes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwarden.core.assignments import AssignmentState
from fleetwarden.core.rollout.planner import Member, MemberStatus, RolloutView, Tick, plan_tick
from fleetwarden.core.rollout.strategy import (
    Budget,
    Canary,
    FailureAction,
    Gates,
    RateLimit,
    Strategy,
    WaveKind,
    WaveSpec,
    WindowEnd,
)
from fleetwarden.core.rollout.waves import plan_waves
from fleetwarden.core.rollout.windows import Window

A = AssignmentState
MS = MemberStatus
T0 = datetime(2026, 6, 1, tzinfo=UTC)
GROUPS = ("zone-a", "zone-b", "zone-c")
MODELS = ("rpi4", "x86", "")
UNFINISHED = (A.PENDING, A.DOWNLOADING, A.INSTALLING, A.REBOOTING, A.VERIFYING)
IN_PROGRESS = frozenset({A.DOWNLOADING, A.INSTALLING, A.REBOOTING, A.VERIFYING})
NOT_INSTALLING = frozenset({A.PENDING, A.DOWNLOADING})
ONE_MINUTE = timedelta(minutes=1)
PROPS = settings(max_examples=100, deadline=None)


# -- maintenance windows with an arithmetic oracle ---------------------------------------------


@dataclass(frozen=True)
class Win:
    """A window "M H * * *" (or "M * * * *") in a zone without daylight saving, so that when it
    is open can be computed by plain arithmetic, independently of cron."""

    minute: int
    hour: int | None
    duration: timedelta
    zone: str = "UTC"

    def window(self) -> Window:
        hour = "*" if self.hour is None else str(self.hour)
        return Window(f"{self.minute} {hour} * * *", self.duration, self.zone)

    def _last_start(self, now: datetime) -> tuple[datetime, timedelta]:
        local = now.astimezone(ZoneInfo(self.zone))
        start = local.replace(minute=self.minute, second=0, microsecond=0)
        period = timedelta(hours=1)
        if self.hour is not None:
            start, period = start.replace(hour=self.hour), timedelta(days=1)
        if start > local:
            start -= period
        return start, period

    def open(self, now: datetime) -> bool:
        start, _ = self._last_start(now)
        return now < start + self.duration

    def ok(self, now: datetime, lead: timedelta) -> bool:
        """Open, or opening within the download lead (rule 2)."""
        start, period = self._last_start(now)
        return now < start + self.duration or (lead > timedelta(0) and start + period - now <= lead)


wins = st.builds(
    Win,
    minute=st.integers(0, 59),
    hour=st.none() | st.integers(0, 23),
    duration=st.integers(1, 300).map(lambda m: timedelta(minutes=m)),
    zone=st.sampled_from(("UTC", "Asia/Kolkata", "Asia/Kathmandu", "Asia/Tokyo")),
)


# -- random rollouts ---------------------------------------------------------------------------


@dataclass
class Case:
    view: RolloutView
    now: datetime
    wins: dict[int, Win]


def minutes(lo: int, hi: int) -> st.SearchStrategy[timedelta]:
    return st.integers(lo, hi).map(lambda m: timedelta(minutes=m))


percents = st.integers(0, 100).map(float) | st.sampled_from((12.5, 33.3, 66.7))
positive_percents = st.integers(1, 100).map(float) | st.sampled_from(
    (12.5, 25.0, 33.3, 50.0, 100.0)
)
gates = st.builds(
    Gates,
    success_percent=percents,
    failure_percent=st.none() | positive_percents,
    failure_count=st.none() | st.integers(1, 5),
    min_finished=st.integers(1, 5),
    on_failure=st.sampled_from(FailureAction),
    in_progress_timeout=st.none()
    | st.sampled_from((1, 10, 60, 240)).map(lambda m: timedelta(minutes=m))
    | minutes(1, 300),
    max_retries=st.integers(0, 3),
    retry_backoff=minutes(1, 60),
)
budgets = st.none() | st.builds(
    Budget,
    group_by=st.just("zone"),
    max_in_progress=st.none() | st.integers(1, 4),
    max_percent=st.none() | st.floats(1, 100),
)
rates = st.builds(
    RateLimit,
    per_minute=st.none() | st.integers(1, 6),
    increment_factor=st.none() | st.floats(1.1, 5),
    increase_every=st.none() | st.integers(1, 5),
    count_succeeded=st.booleans(),
)
strategies = st.builds(
    Strategy,
    waves=st.builds(
        WaveSpec, soak=st.just(timedelta(0)) | minutes(0, 120), auto_advance=st.booleans()
    ),
    gates=gates,
    budget=budgets,
    rate=rates,
    respect_windows=st.sampled_from((True, True, True, False)),
    download_lead=st.just(timedelta(0)) | minutes(1, 180),
    window_end=st.sampled_from(WindowEnd),
)
#: A rollout early on, in full swing, near its end, retrying, or done: each draws member statuses
#: with its own weights, so that gates, pauses and retries all come up.
W, AC, SU, F, SK = MS.WAITING, MS.ACTIVE, MS.SUCCEEDED, MS.FAILED, MS.SKIPPED
MOODS = (
    (W, W, W, W, W, W, AC, AC, SU, F, SK),
    (W, W, AC, AC, AC, AC, AC, SU, SU, SU, F, SK),
    (SU, SU, SU, SU, SU, SU, F, F, AC, SK),
    (F, F, F, F, W, W, AC, AC, SU, SU),
    (SU, SU, SU, F, SK),
)
#: Ages that sit on the boundaries that matter (the rate's minute, timeouts), and any other.
seconds = st.sampled_from((0, 30, 59, 60, 61, 600, 3600, 4 * 3600)) | st.integers(0, 6 * 3600)
ago = seconds.map(lambda s: timedelta(seconds=s))
long_ago = st.integers(0, 12 * 3600).map(lambda s: timedelta(seconds=s))


def some_windows(ids: list[int]) -> st.SearchStrategy[tuple[int, ...]]:
    if not ids:
        return st.just(())
    return st.just(()) | st.lists(st.sampled_from(ids), min_size=1, max_size=2, unique=True).map(
        tuple
    )


@st.composite
def members(
    draw,
    device_id: str,
    waves: st.SearchStrategy[int],
    now: datetime,
    window_ids: list[int],
    mood: tuple,
) -> Member:
    status = draw(st.sampled_from(mood))
    state = since = finished_at = None
    attempts = 0
    if status is MS.WAITING:
        attempts = draw(st.sampled_from((0, 0, 0, 1, 2)))  # > 0: withdrawn before
        if attempts:
            state, since = A.CANCELLED, now - draw(ago)
    elif status is MS.SKIPPED:
        attempts = draw(st.integers(0, 1))
    else:
        attempts = draw(st.integers(1, 4))
        since = now - draw(ago if status is MS.ACTIVE else long_ago)
        if status is MS.ACTIVE:
            state = draw(st.sampled_from(UNFINISHED))
        else:
            state = (
                A.SUCCEEDED
                if status is MS.SUCCEEDED
                else draw(st.sampled_from((A.FAILED, A.ROLLED_BACK)))
            )
            finished_at = since + (now - since) * draw(st.sampled_from((0, 0.25, 0.5, 1)))
    return Member(
        device_id=device_id,
        wave=draw(waves),
        group=draw(st.sampled_from(GROUPS)),
        model=draw(st.sampled_from(MODELS)),
        status=status,
        state=state,
        since=since,
        finished_at=finished_at,
        attempts=attempts,
        windows=draw(some_windows(window_ids)),
        blocked=draw(st.sampled_from((False,) * 7 + (True,))),
    )


@st.composite
def cases(draw, max_members: int = 24) -> Case:
    now = T0 + timedelta(seconds=draw(st.integers(0, 90 * 86400)))
    described = dict(
        enumerate(draw(st.lists(wins, min_size=draw(st.integers(0, 1)), max_size=3)), start=1)
    )
    n_waves = draw(st.integers(1, 4))
    n = draw(st.integers(0, max_members))
    mood = draw(st.sampled_from(MOODS))
    current = draw(st.integers(0, n_waves - 1))
    waves = st.integers(0, current) | st.integers(0, n_waves - 1)  # mostly due by wave
    ms = [draw(members(f"d{i:02d}", waves, now, list(described), mood)) for i in range(n)]
    ms.sort(key=lambda m: m.wave)  # "in wave order, then planned order"
    view = RolloutView(
        strategy=draw(strategies),
        members=tuple(ms),
        windows={i: w.window() for i, w in described.items()},
        current_wave=current,
        wave_count=n_waves,
        wave_completed_at=draw(st.none() | ago.map(lambda d: now - d)),
        emergency=draw(st.sampled_from((False, False, False, True))),
    )
    return Case(view, now, described)


# -- the rules, read independently of the planner ----------------------------------------------


def live(m: Member) -> bool:
    return m.status is not MS.SKIPPED


def ignores_windows(view: RolloutView) -> bool:
    return view.emergency or not view.strategy.respect_windows


def timed_out(m: Member, view: RolloutView, now: datetime) -> bool:
    """Rule 8: in progress (the device started working) for longer than the timeout."""
    t = view.strategy.gates.in_progress_timeout
    return (
        m.status is MS.ACTIVE
        and t is not None
        and m.state in IN_PROGRESS
        and m.since is not None
        and now - m.since >= t
    )


def withdrawn(m: Member, case: Case) -> bool:
    """WindowEnd.CANCEL_PENDING: assignments not yet installing go when all windows closed
    and none opens within the download lead (an assignment made in the lead is waiting)."""
    view = case.view
    return (
        m.status is MS.ACTIVE
        and not timed_out(m, view, case.now)
        and view.strategy.window_end is WindowEnd.CANCEL_PENDING
        and not ignores_windows(view)
        and m.state in NOT_INSTALLING
        and bool(m.windows)
        and not window_ok(m, case)
    )


def retry_due(m: Member, view: RolloutView, now: datetime) -> bool:
    """Rule 9: retried up to max_retries times, after backoff * 2**(attempts - 1)."""
    g = view.strategy.gates
    return (
        m.status is MS.FAILED
        and m.attempts <= g.max_retries
        and m.finished_at is not None
        and now >= m.finished_at + g.retry_backoff * 2 ** (m.attempts - 1)
    )


def window_ok(m: Member, case: Case) -> bool:
    if ignores_windows(case.view) or not m.windows:
        return True
    lead = case.view.strategy.download_lead
    return any(case.wins[w].ok(case.now, lead) for w in m.windows)


@dataclass
class Expected:
    timeouts: set[str]
    withdrawn: set[str]
    succeeded: int
    failed: int  # finished failures in the current wave (no retry left)
    breach: bool
    wave_done: bool
    stuck: bool  # rule 7
    advance: bool
    no_work_left: bool
    eligible: list[Member]  # in planned order

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed


def expected(case: Case) -> Expected:
    view, now = case.view, case.now
    s, g = view.strategy, view.strategy.gates
    alive = [m for m in view.members if live(m)]
    tos = {m.device_id for m in alive if timed_out(m, view, now)}
    wd = {m.device_id for m in alive if withdrawn(m, case)}

    def failed_for_good(m: Member) -> bool:
        return (m.status is MS.FAILED or m.device_id in tos) and m.attempts > g.max_retries

    wave = [m for m in alive if m.wave == view.current_wave]
    succeeded = sum(m.status is MS.SUCCEEDED for m in wave)
    failed = sum(failed_for_good(m) for m in wave)
    finished = succeeded + failed
    running = sum(m.status is MS.ACTIVE and m.device_id not in tos | wd for m in wave)
    waiting = len(wave) - finished - running  # waiting, withdrawn, or failed with a retry left
    by_percent = (
        g.failure_percent is not None and failed * 100 >= Fraction(g.failure_percent) * finished
    )
    by_count = g.failure_count is not None and failed >= g.failure_count
    breach = finished >= g.min_finished and failed > 0 and (by_percent or by_count)
    wave_done = succeeded * 100 >= Fraction(g.success_percent) * len(wave)
    stuck = not breach and not wave_done and bool(wave) and waiting == 0 and running == 0
    completed_at = view.wave_completed_at or (now if wave_done else None)
    soaked = completed_at is not None and (view.emergency or now >= completed_at + s.waves.soak)
    last = view.current_wave >= view.wave_count - 1
    advance = not breach and wave_done and not last and s.waves.auto_advance and soaked
    no_work_left = all(
        m.device_id not in wd and (m.status is MS.SUCCEEDED or failed_for_good(m)) for m in alive
    )
    eligible = [
        m
        for m in alive
        if m.wave <= view.current_wave
        and m.device_id not in tos | wd
        and (m.status is MS.WAITING or retry_due(m, view, now))
        and not m.blocked
        and window_ok(m, case)
    ]
    return Expected(
        tos, wd, succeeded, failed, breach, wave_done, stuck, advance, no_work_left, eligible
    )


def breached(tick: Tick) -> bool:
    return tick.abort is not None or (tick.pause is not None and "failure gate" in tick.pause)


def unfinished_after(view: RolloutView, tick: Tick) -> Counter[str]:
    """Unfinished assignments per group once the tick is applied."""
    gone = set(tick.timeouts) | set(tick.cancel)
    groups = {m.device_id: m.group for m in view.members}
    out = Counter(
        m.group
        for m in view.members
        if live(m) and m.status is MS.ACTIVE and m.device_id not in gone
    )
    out.update(groups[d] for d in tick.assign)
    return out


def budget_limits(view: RolloutView) -> dict[str, int]:
    assert view.strategy.budget is not None
    sizes = Counter(m.group for m in view.members if live(m))
    return {g: view.strategy.budget.limit(sizes[g]) for g in GROUPS}


def rate_left(view: RolloutView, now: datetime) -> int | None:
    """What the sliding minute still allows, or None without a rate limit."""
    alive = [m for m in view.members if live(m)]
    limit = view.strategy.rate.current(
        sum(m.attempts > 0 for m in alive), sum(m.status is MS.SUCCEEDED for m in alive)
    )
    if limit is None:
        return None
    recent = sum(m.since is not None and m.since > now - ONE_MINUTE for m in alive)
    return max(0, limit - recent)


def with_strategy(case: Case, **changes) -> Case:
    strategy = replace(case.view.strategy, **changes)
    return replace(case, view=replace(case.view, strategy=strategy))


def with_gates(case: Case, **changes) -> Case:
    s = case.view.strategy
    strategy = replace(s, gates=replace(s.gates, **changes))
    return replace(case, view=replace(case.view, strategy=strategy))


def with_members(case: Case, ms: list[Member]) -> Case:
    ms = sorted(ms, key=lambda m: m.wave)
    return replace(case, view=replace(case.view, members=tuple(ms)))


# -- rule 1: budgets ---------------------------------------------------------------------------


@PROPS
@given(cases(), budgets.filter(lambda b: b is not None))
def test_budget_is_never_exceeded_and_never_added_to_when_full(case, budget):
    """Rule 1: after the tick, no budget group has more unfinished assignments than its limit
    (assignments already over the limit are never added to). Unfinished: active after the
    tick (minus timeouts and withdrawals) plus newly assigned; limit: Budget.limit(group size).
    So a tick that starts within budget ends within budget."""
    # Also with a budget and no rate limit, where the budget alone holds devices back.
    for c in (case, with_strategy(case, budget=budget, rate=RateLimit())):
        view = c.view
        if view.strategy.budget is None:
            continue
        tick = plan_tick(view, c.now)
        limits = budget_limits(view)
        before = unfinished_after(view, Tick(timeouts=tick.timeouts, cancel=tick.cancel))
        after = unfinished_after(view, tick)
        for group in GROUPS:
            if before[group] >= limits[group]:
                assert after[group] == before[group], group
            else:
                assert after[group] <= limits[group], group


def test_default_budget_is_one_device_per_zone():
    """Strategy defaults: one device in progress per zone."""
    ms = [Member(f"{z}{i}", 0, group=z) for z in "ab" for i in range(3)]
    ms.append(Member("c0", 0, group="c", status=MS.ACTIVE, state=A.PENDING, since=T0, attempts=1))
    ms.append(Member("c1", 0, group="c"))
    tick = plan_tick(RolloutView(Strategy(), ms), T0)
    assert tick.assign == ["a0", "b0"]


# -- rule 2: windows ---------------------------------------------------------------------------


@PROPS
@given(cases())
def test_no_assignment_while_all_of_a_devices_windows_are_closed(case):
    """Rule 2: a device is assigned only while one of its windows is open (or opens within the
    strategy's download lead), unless the rollout is in emergency mode or ignores windows."""
    # Also with nothing else holding devices back, where windows alone decide.
    unlimited = with_strategy(case, budget=None, rate=RateLimit(), respect_windows=True)
    for c in (case, replace(unlimited, view=replace(unlimited.view, emergency=False))):
        tick = plan_tick(c.view, c.now)
        by_id = {m.device_id: m for m in c.view.members}
        for d in tick.assign:
            m = by_id[d]
            if m.windows and not ignores_windows(c.view):
                lead = c.view.strategy.download_lead
                assert any(c.wins[w].ok(c.now, lead) for w in m.windows), d


def test_windows_hold_devices_back_until_they_open_and_emergency_ignores_them():
    """Rule 2, by example: a 02:00-03:00 UTC window; a 1 h download lead opens it at 01:00."""
    ms = [Member("w", 0, windows=(1,)), Member("free", 0)]
    windows = {1: Window("0 2 * * *", timedelta(hours=1))}
    s = Strategy(budget=None)

    def assigned(strategy: Strategy, at: datetime, *, emergency: bool = False) -> list[str]:
        view = RolloutView(strategy, ms, windows, emergency=emergency)
        return plan_tick(view, at).assign

    night = T0.replace(hour=0, minute=30)
    assert assigned(s, night) == ["free"]
    assert assigned(s, T0.replace(hour=2, minute=59)) == ["w", "free"]
    assert assigned(s, T0.replace(hour=3)) == ["free"]
    assert assigned(replace(s, download_lead=timedelta(hours=1)), night) == ["free"]
    assert assigned(replace(s, download_lead=timedelta(hours=1)), T0.replace(hour=1)) == [
        "w",
        "free",
    ]
    assert assigned(replace(s, respect_windows=False), night) == ["w", "free"]
    assert assigned(s, night, emergency=True) == ["w", "free"]


@PROPS
@given(cases())
def test_pending_assignments_are_withdrawn_when_their_windows_close(case):
    """WindowEnd: with cancel_pending, assignments not yet installing are withdrawn once all of
    the device's windows closed; with finish, nothing is withdrawn but by an abort, which
    withdraws every assignment not yet installing."""
    cancelling = with_strategy(case, window_end=WindowEnd.CANCEL_PENDING, respect_windows=True)
    for c in (case, replace(cancelling, view=replace(cancelling.view, emergency=False))):
        tick = plan_tick(c.view, c.now)
        not_installing = {
            m.device_id
            for m in c.view.members
            if m.status is MS.ACTIVE and m.state in NOT_INSTALLING
        }
        if tick.abort is not None:
            assert not_installing - set(tick.timeouts) <= set(tick.cancel) <= not_installing
            assert tick.cancel == sorted(tick.cancel)
        else:
            assert set(tick.cancel) == expected(c).withdrawn


@pytest.mark.parametrize(
    ("window_end", "state", "open_windows", "emergency", "withdrawn"),
    [
        (WindowEnd.CANCEL_PENDING, A.PENDING, (), False, True),
        (WindowEnd.CANCEL_PENDING, A.DOWNLOADING, (), False, True),
        (WindowEnd.CANCEL_PENDING, A.PENDING, (2,), False, False),  # one of two still open
        (WindowEnd.CANCEL_PENDING, A.INSTALLING, (), False, False),  # installing finishes
        (WindowEnd.CANCEL_PENDING, A.PENDING, (), True, False),  # emergency ignores windows
        (WindowEnd.FINISH, A.PENDING, (), False, False),
    ],
)
def test_window_end_by_example(window_end, state, open_windows, emergency, withdrawn):
    """WindowEnd: with cancel_pending, assignments not yet installing are withdrawn once every
    window of the device closed; never withdrawn and reassigned in the same tick."""
    now = T0.replace(hour=12)
    closed = Window("0 2 * * *", timedelta(hours=1))
    windows = {1: closed, 2: Window("0 12 * * *", timedelta(hours=1)) if open_windows else closed}
    s = Strategy(budget=None, window_end=window_end, download_lead=timedelta(hours=1))
    m = Member("d", 0, status=MS.ACTIVE, state=state, since=now, attempts=1, windows=(1, 2))
    tick = plan_tick(RolloutView(s, [m], windows, emergency=emergency), now)
    assert tick.cancel == (["d"] if withdrawn else [])
    assert tick.assign == []


def test_assignment_made_in_the_download_lead_is_not_withdrawn_before_its_window():
    """Rule 2 with download_lead and WindowEnd.CANCEL_PENDING: the lead exists "so it can
    download in advance"; the window has not ended, so the assignment must stay."""
    s = Strategy(budget=None, download_lead=timedelta(hours=1), window_end=WindowEnd.CANCEL_PENDING)
    windows = {1: Window("0 2 * * *", timedelta(hours=1))}
    at = T0.replace(hour=1, minute=30)
    first = plan_tick(RolloutView(s, [Member("d", 0, windows=(1,))], windows), at)
    assert first.assign == ["d"]
    assigned = Member("d", 0, status=MS.ACTIVE, state=A.PENDING, since=at, attempts=1, windows=(1,))
    second = plan_tick(RolloutView(s, [assigned], windows), at + ONE_MINUTE)
    assert second.cancel == []


# -- rules 3 and 4: the failure gate -----------------------------------------------------------


@PROPS
@given(cases())
def test_failure_gate_fires_exactly_when_the_rule_says(case):
    """Rule 3: once the current wave has min_finished finished devices and its failures reach
    the threshold (percent of finished, or absolute count), the tick pauses, aborts or
    aborts-and-rolls-back, assigns nothing and never advances."""
    view = case.view
    tick = plan_tick(view, case.now)
    want = expected(case)
    assert breached(tick) == want.breach
    if not want.breach:
        assert tick.abort is None
        assert tick.rollback == []
        return
    assert_breach_outcome(view, tick)
    reason = tick.pause or tick.abort
    assert f"{want.failed} of {want.finished} finished" in reason


def assert_breach_outcome(view: RolloutView, tick: Tick) -> None:
    """Rule 3: pause, abort, or abort and roll back the current wave's successes; assign
    nothing, never advance."""
    assert tick.assign == []
    assert tick.advance_to is None
    assert tick.wave_completed_at is None
    assert not tick.finished
    action = view.strategy.gates.on_failure
    assert (tick.pause is not None) == (action is FailureAction.PAUSE)
    assert (tick.abort is not None) == (action is not FailureAction.PAUSE)
    rollback = [
        m.device_id
        for m in view.members
        if m.wave == view.current_wave and m.status is MS.SUCCEEDED
    ]
    assert tick.rollback == (rollback if action is FailureAction.ABORT_AND_ROLLBACK else [])


@pytest.mark.parametrize(
    ("failure_percent", "failure_count", "failed", "breach"),
    [
        (50.0, None, 1, True),  # 1 of 2: exactly 50% reaches the threshold
        (50.0, None, 0, False),
        (60.0, None, 1, False),
        (None, 2, 1, False),
        (None, 2, 2, True),  # exactly the count
        (100.0, None, 2, True),
    ],
)
def test_failure_gate_threshold_is_reached_at_equality(
    failure_percent, failure_count, failed, breach
):
    """Rule 3: the tick breaches once failures *reach* the threshold (percent of finished, or
    absolute count)."""
    gates = Gates(failure_percent=failure_percent, failure_count=failure_count, min_finished=1)
    ms = [Member(f"f{i}", 0, status=MS.FAILED, state=A.FAILED, attempts=1) for i in range(failed)]
    ms += [
        Member(f"s{i}", 0, status=MS.SUCCEEDED, state=A.SUCCEEDED, attempts=1)
        for i in range(2 - failed)
    ]
    ms.append(Member("next", 0))
    tick = plan_tick(RolloutView(Strategy(gates=gates, budget=None), ms), T0)
    assert breached(tick) == breach
    assert tick.assign == ([] if breach else ["next"])


@PROPS
@given(cases(), st.integers(1, 5))
def test_failure_gate_never_fires_before_min_finished(case, extra):
    """Rule 4: the failure gate never fires before min_finished devices of the wave finished,
    even with the most trigger-happy thresholds; at exactly min_finished it does."""
    trigger_happy = with_gates(case, failure_percent=0.5, failure_count=1)
    finished = expected(trigger_happy).finished
    early = with_gates(trigger_happy, min_finished=finished + extra)
    assert not breached(plan_tick(early.view, early.now))
    if finished:
        on_time = with_gates(trigger_happy, min_finished=finished)
        failed = expected(on_time).failed
        assert breached(plan_tick(on_time.view, on_time.now)) == (failed > 0)


@PROPS
@given(cases(), st.sampled_from(FailureAction))
def test_a_breach_assigns_nothing_and_never_advances(case, action):
    """Rule 3: a breached failure gate assigns nothing and never advances — even when the
    success gate is met (success_percent 0) with no soak and automatic advance."""
    view = case.view
    current = view.current_wave
    failure = Member(
        "failed",
        current,
        status=MS.FAILED,
        state=A.FAILED,
        attempts=9,
        since=case.now,
        finished_at=case.now,
    )
    case = with_members(case, [*view.members, failure])
    case = with_gates(case, failure_count=1, min_finished=1, success_percent=0.0, on_failure=action)
    s = case.view.strategy
    strategy = replace(s, waves=replace(s.waves, soak=timedelta(0), auto_advance=True))
    view = replace(case.view, strategy=strategy, wave_count=current + 2)
    tick = plan_tick(view, case.now)
    assert breached(tick)
    assert_breach_outcome(view, tick)


# -- rules 5 and 7: the success gate -----------------------------------------------------------


@PROPS
@given(cases())
def test_next_wave_starts_only_after_the_success_gate_and_the_soak(case):
    """Rule 5: the next wave starts only after success_percent of the current wave succeeded
    and the soak time since then has passed (no soak in emergency mode) — and only with
    automatic advance. The tick records when the wave first met the gate."""
    # Also with no failure gate and a wave to advance to, where the success gate decides.
    calm = with_gates(case, failure_percent=None, failure_count=None)
    calm = replace(calm, view=replace(calm.view, wave_count=calm.view.current_wave + 2))
    for c in (case, calm):
        view = c.view
        tick = plan_tick(view, c.now)
        want = expected(c)
        assert tick.advance_to == (view.current_wave + 1 if want.advance else None)
        first_time = want.wave_done and not want.breach and view.wave_completed_at is None
        assert tick.wave_completed_at == (c.now if first_time else None)


def test_soak_time_delays_the_next_wave():
    """Rule 5, by example: a 1 h soak after the wave met its gate; none in emergency mode."""
    s = Strategy(waves=WaveSpec(soak=timedelta(hours=1)))
    ms = [Member("a", 0, status=MS.SUCCEEDED, state=A.SUCCEEDED, attempts=1), Member("b", 1)]
    view = RolloutView(s, ms, wave_count=2)
    first = plan_tick(view, T0)
    assert (first.wave_completed_at, first.advance_to, first.assign) == (T0, None, [])
    done = replace(view, wave_completed_at=T0)
    assert plan_tick(done, T0 + timedelta(minutes=59)).advance_to is None
    assert plan_tick(done, T0 + timedelta(hours=1)).advance_to == 1
    assert plan_tick(replace(view, emergency=True), T0).advance_to == 1
    manual = replace(done, strategy=replace(s, waves=WaveSpec(auto_advance=False)))
    assert plan_tick(manual, T0 + timedelta(days=1)).advance_to is None


@PROPS
@given(cases())
def test_a_wave_finished_below_the_success_gate_pauses(case):
    """Rule 7: a wave whose devices all finished without reaching the success gate pauses with
    the reason, instead of waiting forever."""
    tick = plan_tick(case.view, case.now)
    want = expected(case)
    stuck = tick.pause is not None and "below" in tick.pause
    assert stuck == want.stuck
    if stuck:
        assert tick.assign == []
        assert tick.advance_to is None
        assert not tick.finished


def test_wave_with_everything_failed_pauses_even_without_failure_gate():
    """Rule 7 (and the success gate counts succeeded, so an all-failed wave never advances)."""
    s = Strategy(gates=Gates(failure_percent=None))
    ms = [Member(d, 0, status=MS.FAILED, state=A.FAILED, attempts=1) for d in "abc"]
    tick = plan_tick(RolloutView(s, [*ms, Member("z", 1)], wave_count=2), T0)
    assert tick.pause == (
        "wave 0 finished with 0 of 3 devices succeeded, below the 100% needed to continue"
    )
    assert tick.advance_to is None
    assert tick.assign == []


# -- rule 6: who may be assigned ---------------------------------------------------------------


@PROPS
@given(cases())
def test_only_due_unblocked_devices_of_current_or_earlier_waves_once(case):
    """Rule 6: only devices of the current or earlier waves are assigned; each at most once per
    tick; never one that another rollout or deployment holds (blocked). And only those due: not
    yet assigned, or failed with a retry due (rule 9)."""
    view = case.view
    tick = plan_tick(view, case.now)
    by_id = {m.device_id: m for m in view.members}
    assert len(tick.assign) == len(set(tick.assign))
    for d in tick.assign:
        m = by_id[d]
        assert m.wave <= view.current_wave
        assert not m.blocked
        assert m.status is MS.WAITING or retry_due(m, view, case.now)
        assert d not in tick.timeouts
        assert d not in tick.cancel


@PROPS
@given(cases())
def test_rate_limit_per_sliding_minute(case):
    """Rule 6: at most the rate limit per sliding minute: the devices assigned in the last
    minute (by assignment time) plus this tick's never exceed RateLimit.current."""
    left = rate_left(case.view, case.now)
    tick = plan_tick(case.view, case.now)
    if left is not None:
        assert len(tick.assign) <= left


@PROPS
@given(cases())
def test_every_eligible_device_is_assigned_unless_a_limit_is_full(case):
    """Rules 1, 2, 6, 9 together are the only reasons to hold back a device that is due: a
    device left out while eligible (current or earlier wave, unblocked, not yet assigned or
    failed with a retry due, a window open) has its budget group full, or the minute's rate
    used up."""
    want = expected(case)
    if want.breach or want.stuck:
        return
    # Without budget and rate limit, exactly the eligible devices are assigned, in order.
    unlimited = with_strategy(case, budget=None, rate=RateLimit())
    assert plan_tick(unlimited.view, case.now).assign == [m.device_id for m in want.eligible]
    view = case.view
    tick = plan_tick(view, case.now)
    left = rate_left(view, case.now)
    rate_full = left is not None and len(tick.assign) >= left
    after = unfinished_after(view, tick)
    limits = budget_limits(view) if view.strategy.budget is not None else {}
    for m in want.eligible:
        if m.device_id not in tick.assign:
            assert rate_full or after[m.group] >= limits.get(m.group, len(view.members) + 1), m


@PROPS
@given(cases())
def test_devices_are_assigned_in_planned_order(case):
    """Members come in wave order, then planned (risk) order: within a budget group, a device
    left waiting is never overtaken by a later one; without a budget, by none at all."""
    view = case.view
    tick = plan_tick(view, case.now)
    assigned = set(tick.assign)
    position = {m.device_id: i for i, m in enumerate(view.members)}
    assert tick.assign == sorted(tick.assign, key=position.__getitem__)
    budget = view.strategy.budget
    for m in expected(case).eligible:
        if m.device_id in assigned:
            continue
        later = [view.members[i] for i in range(position[m.device_id] + 1, len(view.members))]
        overtaken = [o.device_id for o in later if o.device_id in assigned]
        if budget is not None:
            overtaken = [d for d in overtaken if view.members[position[d]].group == m.group]
        assert overtaken == [], m


def test_skipped_members_count_for_nothing():
    """MemberStatus.SKIPPED (revoked, incompatible) counts for nothing: not in the wave's size
    for the success gate, nor in its budget group's size, nor toward the rate limit."""
    skipped = Member("gone", 0, group="z", status=MS.SKIPPED, since=T0, attempts=1)
    done = Member("a", 0, group="y", status=MS.SUCCEEDED, state=A.SUCCEEDED, attempts=1)
    view = RolloutView(Strategy(), [done, skipped, Member("b", 1)], wave_count=2)
    assert plan_tick(view, T0).advance_to == 1
    half = Strategy(budget=Budget(max_in_progress=None, max_percent=50))
    ms = [
        Member("x", 0, group="z"),
        Member("y", 0, group="z"),
        skipped,
        replace(skipped, device_id="gone2"),
    ]
    assert plan_tick(RolloutView(half, ms), T0).assign == ["x"]
    one_a_minute = Strategy(budget=None, rate=RateLimit(per_minute=1))
    assert plan_tick(RolloutView(one_a_minute, ms), T0).assign == ["x"]


def test_blocked_devices_are_counted_not_assigned():
    """Rule 6: never a device that another rollout or deployment holds."""
    ms = [Member("a", 0, blocked=True), Member("b", 0), Member("c", 1)]
    tick = plan_tick(RolloutView(Strategy(budget=None), ms, wave_count=2), T0)
    assert tick.assign == ["b"]
    assert tick.blocked == 1


def test_rate_grows_with_successes_when_counting_succeeded():
    """RateLimit with count_succeeded: the rate doubles after every 2 devices succeeded."""
    rate = RateLimit(per_minute=1, increment_factor=2, increase_every=2, count_succeeded=True)
    done = [
        Member(f"s{i}", 0, status=MS.SUCCEEDED, state=A.SUCCEEDED, attempts=1) for i in range(4)
    ]
    ms = [*done, *(Member(f"w{i}", 0) for i in range(6))]
    assert plan_tick(RolloutView(Strategy(budget=None, rate=rate), ms), T0).assign == [
        "w0",
        "w1",
        "w2",
        "w3",
    ]


def test_rate_limit_counts_assignments_of_the_last_minute():
    """Rule 6, by example: 2 per minute, one assigned 30 s ago, one 60 s ago (outside)."""
    s = Strategy(budget=None, rate=RateLimit(per_minute=2))
    ms = [
        Member("old", 0, status=MS.ACTIVE, state=A.PENDING, since=T0 - ONE_MINUTE, attempts=1),
        Member(
            "new",
            0,
            status=MS.ACTIVE,
            state=A.PENDING,
            since=T0 - timedelta(seconds=30),
            attempts=1,
        ),
        *(Member(f"w{i}", 0) for i in range(3)),
    ]
    assert plan_tick(RolloutView(s, ms), T0).assign == ["w0"]


# -- rules 8 and 9: timeouts and retries -------------------------------------------------------


@PROPS
@given(cases())
def test_timeouts_are_exactly_the_overdue_in_progress_assignments(case):
    """Rule 8: in-progress assignments older than the timeout fail; a pending one (the device
    never started) does not."""
    tick = plan_tick(case.view, case.now)
    assert set(tick.timeouts) == expected(case).timeouts
    assert len(tick.timeouts) == len(set(tick.timeouts))


def test_timeouts_count_as_failures():
    """Rule 8: timed-out assignments count as failures: here they breach the failure gate."""
    s = Strategy(budget=None, gates=Gates(in_progress_timeout=timedelta(hours=4)))
    ms = [
        Member(
            "slow",
            0,
            status=MS.ACTIVE,
            state=A.INSTALLING,
            since=T0 - timedelta(hours=4),
            attempts=1,
        ),
        Member(
            "fresh",
            0,
            status=MS.ACTIVE,
            state=A.INSTALLING,
            since=T0 - timedelta(hours=3),
            attempts=1,
        ),
        Member(
            "offline",
            0,
            status=MS.ACTIVE,
            state=A.PENDING,
            since=T0 - timedelta(days=9),
            attempts=1,
        ),
        Member("next", 0),
    ]
    tick = plan_tick(RolloutView(s, ms), T0)
    assert tick.timeouts == ["slow"]
    assert tick.pause is not None
    assert "failure gate breached in wave 0: 1 of 1 finished devices failed" in tick.pause
    assert tick.assign == []


def test_a_timeout_with_a_retry_left_is_retried_later_not_counted():
    """Rules 8 and 9: a timed-out device with a retry left does not count toward the gate."""
    s = Strategy(budget=None, gates=Gates(max_retries=1, in_progress_timeout=timedelta(hours=1)))
    slow = Member(
        "slow", 0, status=MS.ACTIVE, state=A.VERIFYING, since=T0 - timedelta(hours=2), attempts=1
    )
    tick = plan_tick(RolloutView(s, [slow, Member("b", 0)]), T0)
    assert tick.timeouts == ["slow"]
    assert tick.pause is None
    assert tick.assign == ["b"]  # and not "slow" again in the same tick
    assert tick.wave.failed == 0


def test_a_tick_never_both_times_out_and_withdraws_an_assignment():
    """Rule 8 and the abort: a timed-out assignment has failed; withdrawing it as well asks the
    controller for two contradictory ends of one assignment (cancelling a failed assignment is
    an IllegalTransition in core.assignments)."""
    s = Strategy(budget=None, gates=Gates(on_failure=FailureAction.ABORT, failure_count=1))
    ms = [
        Member(
            "slow",
            0,
            status=MS.ACTIVE,
            state=A.DOWNLOADING,
            since=T0 - timedelta(hours=5),
            attempts=1,
        ),
        Member("queued", 0, status=MS.ACTIVE, state=A.PENDING, since=T0, attempts=1),
    ]
    tick = plan_tick(RolloutView(s, ms), T0)
    assert tick.abort is not None
    assert tick.timeouts == ["slow"]
    assert set(tick.timeouts).isdisjoint(tick.cancel)


@PROPS
@given(cases())
def test_failed_devices_are_retried_only_with_a_retry_left_after_the_backoff(case):
    """Rule 9: failed devices are retried up to max_retries times, with exponential backoff."""
    view = case.view
    tick = plan_tick(view, case.now)
    g = view.strategy.gates
    by_id = {m.device_id: m for m in view.members}
    for d in tick.assign:
        m = by_id[d]
        if m.status is MS.FAILED:
            assert m.attempts <= g.max_retries
            assert case.now - m.finished_at >= g.retry_backoff * 2 ** (m.attempts - 1)


@pytest.mark.parametrize(("attempts", "backoff_minutes"), [(1, 10), (2, 20), (3, 40)])
def test_retry_backoff_doubles(attempts, backoff_minutes):
    """Rule 9, by example: a 10 minute backoff, doubled after each failed attempt."""
    s = Strategy(budget=None, gates=Gates(max_retries=3, failure_percent=None))
    done = T0 - timedelta(minutes=backoff_minutes)

    def tick_at(at: datetime) -> Tick:
        m = Member("d", 0, status=MS.FAILED, state=A.FAILED, attempts=attempts, finished_at=done)
        return plan_tick(RolloutView(s, [m, Member("x", 0, status=MS.ACTIVE)]), at)

    assert tick_at(T0 - timedelta(seconds=1)).assign == []
    assert tick_at(T0).assign == ["d"]


def test_no_retry_after_the_last_attempt():
    s = Strategy(budget=None, gates=Gates(max_retries=2, failure_percent=None))
    m = Member("d", 0, status=MS.FAILED, state=A.FAILED, attempts=3, finished_at=T0)
    view = RolloutView(s, [m, Member("x", 0, status=MS.ACTIVE)])
    assert plan_tick(view, T0 + timedelta(days=30)).assign == []


# -- finishing ---------------------------------------------------------------------------------


@PROPS
@given(cases())
def test_finished_exactly_when_the_last_wave_has_no_work_left(case):
    """A rollout finishes in its last wave, once every device succeeded or failed for good."""
    view = case.view
    tick = plan_tick(view, case.now)
    want = expected(case)
    last = view.current_wave >= view.wave_count - 1
    assert tick.finished == (last and want.no_work_left and not want.breach and not want.stuck)
    if tick.finished:
        assert tick.assign == []
        assert tick.pause is None
        assert tick.abort is None


def test_not_finished_while_a_failed_device_awaits_its_retry():
    """Rule 9 and finishing: a failed device with a retry left still has work ahead."""
    s = Strategy(budget=None, gates=Gates(success_percent=50, max_retries=1, failure_percent=None))
    failed = Member("f", 0, status=MS.FAILED, state=A.FAILED, attempts=1, finished_at=T0)
    ok = Member("s", 0, status=MS.SUCCEEDED, state=A.SUCCEEDED, attempts=1)
    view = RolloutView(s, [ok, failed])
    early = plan_tick(view, T0 + timedelta(minutes=9))
    assert (early.assign, early.finished, early.pause) == ([], False, None)
    assert plan_tick(view, T0 + timedelta(minutes=10)).assign == ["f"]
    given_up = replace(failed, attempts=2)
    assert plan_tick(RolloutView(s, [ok, given_up]), T0).finished


# -- a whole rollout ---------------------------------------------------------------------------

TICK = timedelta(seconds=20)
ALWAYS_OPEN = st.builds(
    Window,
    cron=st.just("* * * * *"),
    duration=minutes(1, 30),
    timezone=st.sampled_from(("UTC", "Europe/Berlin", "America/New_York")),
)


@dataclass
class Fleet:
    strategy: Strategy
    waves: list[list[str]]
    groups: dict[str, str]
    takes: dict[str, int]  # ticks from assignment to success
    windows: dict[int, Window]
    member_windows: dict[str, tuple[int, ...]]
    emergency: bool
    start: datetime


def patient(g: Gates) -> Gates:
    """A timeout longer than any device takes here (80 s), so none fires."""
    timeout = g.in_progress_timeout
    return replace(g, in_progress_timeout=timeout and max(timeout, timedelta(minutes=2)))


@st.composite
def fleets(draw) -> Fleet:
    n = draw(st.integers(1, 20))
    ids = [f"d{i:02d}" for i in range(n)]
    spec = draw(
        st.builds(
            WaveSpec,
            kind=st.sampled_from(WaveKind),
            size=st.integers(1, 60).map(float),
            factor=st.floats(1, 4),
            soak=minutes(0, 3),
        )
    )
    canary = draw(
        st.builds(Canary, count=st.none() | st.integers(0, 3), percent=st.none() | st.floats(0, 30))
    )
    waves = plan_waves(
        ids, canary=canary, canary_matches=set(draw(st.lists(st.sampled_from(ids)))), spec=spec
    )
    windows = dict(enumerate(draw(st.lists(ALWAYS_OPEN, max_size=2)), start=1))
    strategy = draw(
        st.builds(
            Strategy,
            waves=st.just(spec),
            gates=gates.map(patient),
            budget=budgets,
            rate=rates,
            respect_windows=st.booleans(),
            window_end=st.sampled_from(WindowEnd),
        )
    )
    pick = st.lists(st.sampled_from(list(windows)), unique=True) if windows else st.just([])
    return Fleet(
        strategy=strategy,
        waves=waves,
        groups={d: draw(st.sampled_from(GROUPS)) for d in ids},
        takes={d: draw(st.integers(1, 4)) for d in ids},
        windows=windows,
        member_windows={d: tuple(draw(pick)) for d in ids},
        emergency=draw(st.booleans()),
        start=T0 + timedelta(seconds=draw(st.integers(0, 365 * 86400))),
    )


def assert_within_budget(fleet: Fleet, members: list[Member], tick: Tick) -> None:
    budget = fleet.strategy.budget
    if budget is None:
        return
    sizes = Counter(fleet.groups.values())
    after = unfinished_after(RolloutView(fleet.strategy, members), tick)
    for group, n in after.items():
        assert n <= budget.limit(sizes[group]), group


@settings(max_examples=60, deadline=None)
@given(fleets())
def test_rollout_where_nothing_fails_assigns_everyone_and_finishes(fleet):
    """Every eligible device is eventually assigned when nothing fails: ticks every 20 s, each
    assigned device succeeds a few ticks later, windows are absent or always open; the rollout
    finishes within a bounded number of ticks with every device succeeded, each assigned once,
    never over budget and never over the rate limit in any sliding minute."""
    wave_of = {d: k for k, wave in enumerate(fleet.waves) for d in wave}
    members = [
        Member(d, wave_of[d], group=fleet.groups[d], windows=fleet.member_windows[d])
        for wave in fleet.waves
        for d in wave
    ]
    n = len(members)
    soak_ticks = fleet.strategy.waves.soak // TICK
    bound = 10 + 8 * n + len(fleet.waves) * (soak_ticks + 3)
    now, current, completed_at = fleet.start, 0, None
    done_at: dict[str, datetime] = {}
    assigned_at: list[tuple[datetime, int | None]] = []  # per assignment: time, rate limit then
    for _ in range(bound):
        for m in members:  # devices report
            if m.status is MS.ACTIVE and now >= done_at[m.device_id]:
                m.status, m.state, m.finished_at = MS.SUCCEEDED, A.SUCCEEDED, now
            elif m.status is MS.ACTIVE:
                m.state = A.INSTALLING
        view = RolloutView(
            fleet.strategy,
            members,
            fleet.windows,
            current,
            len(fleet.waves),
            completed_at,
            fleet.emergency,
        )
        tick = plan_tick(view, now)
        assert tick.timeouts == tick.cancel == []
        assert tick.pause is None
        assert tick.abort is None
        assert_within_budget(fleet, members, tick)
        limit = fleet.strategy.rate.current(
            sum(m.attempts > 0 for m in members), sum(m.status is MS.SUCCEEDED for m in members)
        )
        if tick.finished:
            break
        if tick.wave_completed_at is not None:
            completed_at = tick.wave_completed_at
        if tick.advance_to is not None:
            assert tick.advance_to == current + 1
            current, completed_at = tick.advance_to, None
        for m in members:
            if m.device_id in tick.assign:
                assert m.status is MS.WAITING
                m.status, m.state, m.since, m.attempts = MS.ACTIVE, A.PENDING, now, m.attempts + 1
                done_at[m.device_id] = now + fleet.takes[m.device_id] * TICK
                assigned_at.append((now, limit))
        now += TICK
    else:
        pytest.fail(f"not finished after {bound} ticks: wave {current}, {members}")
    assert current == len(fleet.waves) - 1
    assert all(m.status is MS.SUCCEEDED and m.attempts == 1 for m in members)
    for at, limit in assigned_at:
        if limit is not None:
            assert sum(at - ONE_MINUTE < t <= at for t, _ in assigned_at) <= limit
