"""One tick of a running rollout: given everything about it and ``now``, what to do.

The controller (server shell) builds a ``RolloutView`` from the database, calls ``plan_tick``
and applies the returned ``Tick`` in one transaction. Nothing here reads a clock or a database.

Rules (each pinned by a property test in tests/core/test_rollout_planner.py):
  1. Budget: after the tick, no budget group has more unfinished assignments than its limit
     (assignments already over the limit — e.g. after a strategy change — are never added to).
  2. Windows: a device is assigned only while one of its windows is open (or opens within the
     strategy's download lead), unless the rollout is in emergency mode or ignores windows.
  3. Failure gate: once the current wave has ``min_finished`` finished devices and its failures
     reach the threshold (percent of finished, or absolute count), the tick pauses, aborts or
     aborts-and-rolls-back, assigns nothing and never advances.
  4. The failure gate never fires before ``min_finished`` devices of the wave finished.
  5. Success gate: the next wave starts only after ``success_percent`` of the current wave
     succeeded and the soak time since then has passed (no soak in emergency mode) — and only
     with automatic advance; otherwise an operator advances.
  6. Only devices of the current or earlier waves are assigned; each at most once per tick;
     never one that another rollout or deployment holds (``blocked``); at most the rate limit
     per sliding minute.
  7. A wave whose devices all finished without reaching the success gate pauses with the
     reason, instead of waiting forever.
  8. In-progress assignments older than the timeout fail (and count as failures).
  9. Failed devices are retried up to ``max_retries`` times, with exponential backoff; only
     failures with no retry left count toward the failure gate.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fleetwarden.core.assignments import AssignmentState
from fleetwarden.core.rollout.strategy import FailureAction, Strategy, WindowEnd
from fleetwarden.core.rollout.windows import Window

__all__ = ["Member", "MemberStatus", "RolloutView", "Tick", "WaveStats", "plan_tick"]

_RATE_WINDOW = timedelta(minutes=1)
_NOT_INSTALLING = frozenset({AssignmentState.PENDING, AssignmentState.DOWNLOADING})
_IN_PROGRESS = frozenset(
    {
        AssignmentState.DOWNLOADING,
        AssignmentState.INSTALLING,
        AssignmentState.REBOOTING,
        AssignmentState.VERIFYING,
    }
)


class MemberStatus(enum.StrEnum):
    WAITING = "waiting"  # not assigned (yet, or again after a withdrawal)
    ACTIVE = "active"  # its assignment is unfinished
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # its last assignment failed or rolled back
    SKIPPED = "skipped"  # left out (revoked, incompatible): counts for nothing


@dataclass(slots=True)
class Member:
    """One device in a rollout. Treated as read-only by the planner."""

    device_id: str
    wave: int
    group: str = ""
    model: str = ""
    status: MemberStatus = MemberStatus.WAITING
    state: AssignmentState | None = None
    #: When the current (or last) assignment was created.
    since: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    windows: tuple[int, ...] = ()
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class RolloutView:
    strategy: Strategy
    members: Sequence[Member]  # in wave order, then planned order
    windows: Mapping[int, Window] = field(default_factory=dict)
    current_wave: int = 0
    wave_count: int = 1
    wave_completed_at: datetime | None = None
    emergency: bool = False


@dataclass(frozen=True, slots=True)
class WaveStats:
    size: int = 0
    waiting: int = 0
    active: int = 0
    succeeded: int = 0
    failed: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed


@dataclass
class Tick:
    assign: list[str] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    rollback: list[str] = field(default_factory=list)
    advance_to: int | None = None
    wave_completed_at: datetime | None = None
    pause: str | None = None
    abort: str | None = None
    finished: bool = False
    waiting_for_window: int = 0
    blocked: int = 0
    wave: WaveStats = field(default_factory=WaveStats)

    @property
    def changes(self) -> bool:
        return bool(
            self.assign
            or self.timeouts
            or self.cancel
            or self.rollback
            or self.pause
            or self.abort
            or self.finished
            or self.advance_to is not None
            or self.wave_completed_at is not None
        )


def _retry_due(m: Member, strategy: Strategy, now: datetime) -> bool:
    g = strategy.gates
    if m.attempts > g.max_retries or m.finished_at is None:
        return False
    return now >= m.finished_at + g.retry_backoff * (1 << max(0, m.attempts - 1))


def _breach_reason(
    strategy: Strategy, wave: int, stats: WaveStats, failed_models: Counter[str]
) -> str | None:
    g = strategy.gates
    finished = stats.finished
    if finished < g.min_finished or stats.failed == 0:
        return None
    by_percent = (
        g.failure_percent is not None and stats.failed * 100 >= g.failure_percent * finished
    )
    by_count = g.failure_count is not None and stats.failed >= g.failure_count
    if not (by_percent or by_count):
        return None
    models = ", ".join(f"{m or 'unknown model'}: {n}" for m, n in failed_models.most_common(5))
    limit = f"{g.failure_percent:g}%" if by_percent else f"{g.failure_count} device(s)"
    return (
        f"failure gate breached in wave {wave}: {stats.failed} of {finished} finished devices "
        f"failed (limit {limit}); failures by hardware model: {models}"
    )


def plan_tick(view: RolloutView, now: datetime) -> Tick:  # noqa: C901, PLR0912, PLR0915 - one pass over a million members, kept flat on purpose
    s, g = view.strategy, view.strategy.gates
    tick = Tick()
    ignore_windows = view.emergency or not s.respect_windows
    window_ok: dict[int, bool] = {}
    window_open_now: dict[int, bool] = {}
    for wid, w in view.windows.items():
        open_now = w.is_open(now)
        window_open_now[wid] = open_now
        window_ok[wid] = open_now or (
            s.download_lead > timedelta(0) and w.next_open(now) - now <= s.download_lead
        )

    # -- pass 1: counts, timeouts, withdrawals -------------------------------------------------
    group_size: Counter[str] = Counter()
    group_active: Counter[str] = Counter()
    failed_models: Counter[str] = Counter()
    notified = succeeded_total = recent = 0
    waiting = active = succeeded = failed = size = 0
    timeout = g.in_progress_timeout
    rate_since = now - _RATE_WINDOW
    for m in view.members:
        status = m.status
        if status is MemberStatus.SKIPPED:
            continue
        group_size[m.group] += 1
        if m.attempts:
            notified += 1
        if m.since is not None and m.since > rate_since:
            recent += 1
        if status is MemberStatus.ACTIVE:
            if (
                timeout is not None
                and m.state in _IN_PROGRESS
                and m.since is not None
                and now - m.since >= timeout
            ):
                tick.timeouts.append(m.device_id)
                status = MemberStatus.FAILED
            elif (
                s.window_end is WindowEnd.CANCEL_PENDING
                and not ignore_windows
                and m.state in _NOT_INSTALLING
                and m.windows
                # "Ended" means no window is open and none opens within the download lead:
                # an assignment made in the lead is waiting for its window, not past it.
                and not any(window_ok.get(w, True) for w in m.windows)
            ):
                tick.cancel.append(m.device_id)
                status = MemberStatus.WAITING
            else:
                group_active[m.group] += 1
        elif status is MemberStatus.SUCCEEDED:
            succeeded_total += 1
        if m.wave == view.current_wave:
            size += 1
            if status is MemberStatus.SUCCEEDED:
                succeeded += 1
            elif status is MemberStatus.ACTIVE:
                active += 1
            elif status is MemberStatus.WAITING:
                waiting += 1
            elif status is MemberStatus.FAILED:
                if m.attempts > g.max_retries:
                    failed += 1
                    failed_models[m.model] += 1
                else:
                    waiting += 1  # a retry is coming (rule 9)
    tick.wave = stats = WaveStats(size, waiting, active, succeeded, failed)

    # -- gates (rules 3, 4, 5, 7) -------------------------------------------------------------
    reason = _breach_reason(s, view.current_wave, stats, failed_models)
    if reason is not None:
        if g.on_failure is FailureAction.PAUSE:
            tick.pause = reason
        else:
            tick.abort = reason
            timed_out = set(tick.timeouts)
            cancellable = {
                m.device_id
                for m in view.members
                if m.status is MemberStatus.ACTIVE and m.state in _NOT_INSTALLING
            }
            # A timed-out assignment has already failed: it is not withdrawn as well.
            tick.cancel = sorted((cancellable | set(tick.cancel)) - timed_out)
            if g.on_failure is FailureAction.ABORT_AND_ROLLBACK:
                tick.rollback = [
                    m.device_id
                    for m in view.members
                    if m.wave == view.current_wave and m.status is MemberStatus.SUCCEEDED
                ]
        return tick

    required = math.ceil(size * g.success_percent / 100) if size else 0
    wave_done = succeeded >= required
    completed_at = view.wave_completed_at
    if wave_done and completed_at is None:
        completed_at = tick.wave_completed_at = now
    last_wave = view.current_wave >= view.wave_count - 1
    soaked = completed_at is not None and (view.emergency or now >= completed_at + s.waves.soak)
    if wave_done and not last_wave and s.waves.auto_advance and soaked:
        tick.advance_to = view.current_wave + 1
    if not wave_done and size and waiting == 0 and active == 0:
        tick.pause = (
            f"wave {view.current_wave} finished with {succeeded} of {size} devices succeeded, "
            f"below the {g.success_percent:g}% needed to continue"
        )
        return tick

    # -- assignments (rules 1, 2, 6, 9) -------------------------------------------------------
    _assign(
        view,
        tick,
        now,
        ignore_windows,
        window_ok,
        group_size,
        group_active,
        notified,
        succeeded_total,
        recent,
    )
    if last_wave and not tick.assign and not _work_left(view, tick):
        tick.finished = True
    return tick


def _assign(  # noqa: C901 - the hot loop over up to a million members stays in one function
    view: RolloutView,
    tick: Tick,
    now: datetime,
    ignore_windows: bool,
    window_ok: Mapping[int, bool],
    group_size: Counter[str],
    group_active: Counter[str],
    notified: int,
    succeeded_total: int,
    recent: int,
) -> None:
    s = view.strategy
    limit = s.rate.current(notified, succeeded_total)
    rate_left = None if limit is None else max(0, limit - recent)
    budget = s.budget
    caps: dict[str, int] = {}
    excluded = set(tick.timeouts) | set(tick.cancel)
    for m in view.members:
        if m.wave > view.current_wave or m.device_id in excluded:
            continue
        if not _due(m, s, now):
            continue
        if m.blocked:
            tick.blocked += 1
            continue
        if not ignore_windows and m.windows and not any(window_ok.get(w, True) for w in m.windows):
            tick.waiting_for_window += 1
            continue
        if rate_left is not None and rate_left <= 0:
            continue
        if budget is not None:
            cap = caps.get(m.group)
            if cap is None:
                cap = caps[m.group] = budget.limit(group_size[m.group])
            if group_active[m.group] >= cap:
                continue
            group_active[m.group] += 1
        tick.assign.append(m.device_id)
        if rate_left is not None:
            rate_left -= 1


def _due(m: Member, strategy: Strategy, now: datetime) -> bool:
    """Waiting for a first assignment, or failed with a retry due (rule 9)."""
    if m.status is MemberStatus.WAITING:
        return True
    return m.status is MemberStatus.FAILED and _retry_due(m, strategy, now)


def _work_left(view: RolloutView, tick: Tick) -> bool:
    """Whether any member still has work ahead after applying ``tick`` (for "finished")."""
    timeouts = set(tick.timeouts)
    cancelled = set(tick.cancel)
    max_retries = view.strategy.gates.max_retries
    for m in view.members:
        if m.status is MemberStatus.SKIPPED:
            continue
        if m.device_id in cancelled or m.status is MemberStatus.WAITING:
            return True
        if m.status is MemberStatus.ACTIVE and m.device_id not in timeouts:
            return True
        failed = m.status is MemberStatus.FAILED or m.device_id in timeouts
        if failed and m.attempts <= max_retries:
            return True
    return False
