"""What an operator asks of a rollout: the strategy, as plain frozen data.

Every field has a safe default, so an empty strategy means: a canary of 1% (at least one
device), then waves of 25% of the targets, each wave needing 100% success to advance with no
soak time, pausing at the first 10% failures once 1 device finished, one device in progress per
zone, no fleet-wide rate limit, maintenance windows respected, four-eyes approval, dynamic
membership. The wire form (TOML/JSON) lives in ``fleetwarden.protocol.api.StrategySpec``.

Where the reference systems disagree, these choices hold (docs/rollouts.md says why):
  * wave sizes are relative to the whole target set (hawkBit's "% of remaining" shrinks waves
    and confuses operators at 10,000 devices);
  * the success gate counts *succeeded* devices (hawkBit counts finished), so a wave where
    everything failed can never advance;
  * the failure gate is evaluated on the current wave as a share of *finished* devices, with
    an absolute count and a minimum number of finished devices (AWS abortConfig);
  * disruption budgets count every unfinished assignment, including those merely notified
    (Google OS Config's definition of "disrupted"), per group of a chosen attribute.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import timedelta

from fleetwarden.core.selector import Selector

__all__ = [
    "Budget",
    "Canary",
    "FailureAction",
    "Gates",
    "Hooks",
    "RateLimit",
    "Strategy",
    "WaveKind",
    "WaveSpec",
    "WindowEnd",
]


@dataclass(frozen=True, slots=True)
class Canary:
    """The first wave. ``count`` wins over ``percent``; ``selector`` picks preferred devices."""

    count: int | None = None
    percent: float | None = 1.0
    selector: Selector | None = None

    def size(self, total: int) -> int:
        if total == 0:
            return 0
        if self.count is not None:
            return min(self.count, total)
        if self.percent is None or self.percent <= 0:
            return 0
        return min(total, max(1, math.ceil(total * self.percent / 100)))


class WaveKind(enum.StrEnum):
    FIXED = "fixed"  # ``size`` devices per wave
    PERCENT = "percent"  # ``size`` percent of all targets per wave
    EXPONENTIAL = "exponential"  # ``size`` devices, then times ``factor`` each wave


@dataclass(frozen=True, slots=True)
class WaveSpec:
    kind: WaveKind = WaveKind.PERCENT
    size: float = 25.0
    factor: float = 2.0
    soak: timedelta = timedelta(0)
    auto_advance: bool = True


class FailureAction(enum.StrEnum):
    PAUSE = "pause"
    ABORT = "abort"
    ABORT_AND_ROLLBACK = "abort_and_rollback"


@dataclass(frozen=True, slots=True)
class Gates:
    success_percent: float = 100.0
    failure_percent: float | None = 10.0
    failure_count: int | None = None
    min_finished: int = 1
    on_failure: FailureAction = FailureAction.PAUSE
    in_progress_timeout: timedelta | None = timedelta(hours=4)
    max_retries: int = 0
    retry_backoff: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Budget:
    """At most ``max_in_progress`` devices (or ``max_percent`` of the group, rounded up, at
    least one) with an unfinished assignment per value of ``group_by``."""

    group_by: str = "zone"
    max_in_progress: int | None = 1
    max_percent: float | None = None

    def limit(self, group_size: int) -> int:
        limits = []
        if self.max_in_progress is not None:
            limits.append(self.max_in_progress)
        if self.max_percent is not None:
            limits.append(max(1, math.ceil(group_size * self.max_percent / 100)))
        return min(limits) if limits else group_size


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Devices newly assigned per minute, fleet-wide. With ``increment_factor`` the rate grows
    like AWS IoT's exponential rollout: times the factor after every ``increase_every``
    devices notified (or succeeded, with ``count_succeeded``)."""

    per_minute: int | None = None
    increment_factor: float | None = None
    increase_every: int | None = None
    count_succeeded: bool = False

    def current(self, notified: int, succeeded: int) -> int | None:
        if self.per_minute is None:
            return None
        if not self.increment_factor or not self.increase_every:
            return self.per_minute
        steps = (succeeded if self.count_succeeded else notified) // self.increase_every
        # Capped: an unbounded power overflows long before it matters.
        return int(min(self.per_minute * self.increment_factor ** min(steps, 64), 1_000_000))


class WindowEnd(enum.StrEnum):
    FINISH = "finish"  # installs already running finish; the rest wait for the next window
    CANCEL_PENDING = "cancel_pending"  # assignments not yet installing are withdrawn


@dataclass(frozen=True, slots=True)
class Hooks:
    """Commands the agent runs around an install: ``pre`` must succeed before it (drain),
    ``post`` must succeed after the health checks (undrain), and runs again after a rollback."""

    pre: tuple[tuple[str, ...], ...] = ()
    post: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Strategy:
    canary: Canary = field(default_factory=Canary)
    waves: WaveSpec = field(default_factory=WaveSpec)
    gates: Gates = field(default_factory=Gates)
    budget: Budget | None = field(default_factory=Budget)
    rate: RateLimit = field(default_factory=RateLimit)
    respect_windows: bool = True
    #: Assign this long before a device's window opens, so it can download in advance;
    #: the install itself still waits for the window.
    download_lead: timedelta = timedelta(0)
    window_end: WindowEnd = WindowEnd.FINISH
    criticality_label: str = "criticality"
    use_risk: bool = True
    approval_required: bool = True
    allow_self_approval: bool = False
    dynamic: bool = True
    hooks: Hooks = field(default_factory=Hooks)
