"""Rollouts and maintenance windows on the wire (REST API and the strategy TOML file).

``StrategySpec`` is what an operator writes (see docs/rollouts.md for a commented example);
``to_core()`` turns it into ``fleetwarden.core.rollout.strategy.Strategy``, the plain data the
planner reads.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

from fleetwarden.core import selector as sel
from fleetwarden.core.durations import parse_duration, render_duration
from fleetwarden.core.rollout import strategy as core
from fleetwarden.core.rollout.lifecycle import RolloutState

__all__ = [
    "AbortBody",
    "Duration",
    "MemberOut",
    "ReasonBody",
    "RiskRow",
    "RolloutCreate",
    "RolloutEventOut",
    "RolloutOut",
    "StartBody",
    "StrategySpec",
    "WaveOut",
    "WindowCreate",
    "WindowOut",
]


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


#: "30m", "2h", "1d", "1h30m" or seconds on input; rendered back as "1h30m".
Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(render_duration, return_type=str)
]
Command = Annotated[
    list[Annotated[str, StringConstraints(max_length=4096)]], Field(min_length=1, max_length=64)
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CanarySpec(_Spec):
    count: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    percent: Annotated[float, Field(ge=0, le=100)] | None = 1.0
    selector: Annotated[str, StringConstraints(max_length=4096)] | None = None

    @model_validator(mode="after")
    def _selector_parses(self) -> CanarySpec:
        if self.selector:
            sel.parse(self.selector)
        return self


class WavesSpec(_Spec):
    kind: core.WaveKind = core.WaveKind.PERCENT
    size: Annotated[float, Field(gt=0, le=1_000_000)] = 25.0
    factor: Annotated[float, Field(ge=1, le=10)] = 2.0
    soak: Duration = timedelta(0)
    advance: Literal["auto", "manual"] = "auto"

    @model_validator(mode="after")
    def _percent_range(self) -> WavesSpec:
        if self.kind is core.WaveKind.PERCENT and self.size > 100:
            raise ValueError("percent waves take a size between 0 and 100")
        return self


class GatesSpec(_Spec):
    success_percent: Annotated[float, Field(ge=0, le=100)] = 100.0
    failure_percent: Annotated[float, Field(gt=0, le=100)] | None = 10.0
    failure_count: Annotated[int, Field(ge=1)] | None = None
    min_finished: Annotated[int, Field(ge=1)] = 1
    on_failure: core.FailureAction = core.FailureAction.PAUSE
    timeout: Duration | None = timedelta(hours=4)
    max_retries: Annotated[int, Field(ge=0, le=10)] = 0
    retry_backoff: Duration = timedelta(minutes=10)


class BudgetSpec(_Spec):
    group_by: Annotated[str, StringConstraints(min_length=1, max_length=63)] = "zone"
    max_in_progress: Annotated[int, Field(ge=1)] | None = 1
    max_percent: Annotated[float, Field(gt=0, le=100)] | None = None


class RateSpec(_Spec):
    per_minute: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    increment_factor: Annotated[float, Field(ge=1.1, le=5)] | None = None
    increase_every: Annotated[int, Field(ge=1)] | None = None
    count: Literal["notified", "succeeded"] = "notified"


class WindowsSpec(_Spec):
    respect: bool = True
    download_lead: Duration = timedelta(0)
    on_end: core.WindowEnd = core.WindowEnd.FINISH


class OrderingSpec(_Spec):
    criticality_label: Annotated[str, StringConstraints(min_length=1, max_length=63)] = (
        "criticality"
    )
    risk: bool = True


class ApprovalSpec(_Spec):
    required: bool = True
    allow_self: bool = False


class HooksSpec(_Spec):
    pre: Annotated[list[Command], Field(max_length=16)] = Field(default_factory=list)
    post: Annotated[list[Command], Field(max_length=16)] = Field(default_factory=list)


class StrategySpec(_Spec):
    """Every section and key is optional; the defaults are the safe ones (core.rollout.strategy)."""

    canary: CanarySpec = Field(default_factory=CanarySpec)
    waves: WavesSpec = Field(default_factory=WavesSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    #: ``false`` (TOML has no null) or ``null`` switches the disruption budget off.
    budget: Annotated[BudgetSpec | None, BeforeValidator(lambda v: None if v is False else v)] = (
        Field(default_factory=BudgetSpec)
    )
    rate: RateSpec = Field(default_factory=RateSpec)
    windows: WindowsSpec = Field(default_factory=WindowsSpec)
    ordering: OrderingSpec = Field(default_factory=OrderingSpec)
    approval: ApprovalSpec = Field(default_factory=ApprovalSpec)
    hooks: HooksSpec = Field(default_factory=HooksSpec)
    dynamic: bool = True

    def to_core(self) -> core.Strategy:
        c, w, g, r = self.canary, self.waves, self.gates, self.rate
        return core.Strategy(
            canary=core.Canary(c.count, c.percent, sel.parse(c.selector) if c.selector else None),
            waves=core.WaveSpec(w.kind, w.size, w.factor, w.soak, w.advance == "auto"),
            gates=core.Gates(
                g.success_percent,
                g.failure_percent,
                g.failure_count,
                g.min_finished,
                g.on_failure,
                g.timeout,
                g.max_retries,
                g.retry_backoff,
            ),
            budget=(
                core.Budget(
                    self.budget.group_by, self.budget.max_in_progress, self.budget.max_percent
                )
                if self.budget is not None
                else None
            ),
            rate=core.RateLimit(
                r.per_minute, r.increment_factor, r.increase_every, r.count == "succeeded"
            ),
            respect_windows=self.windows.respect,
            download_lead=self.windows.download_lead,
            window_end=self.windows.on_end,
            criticality_label=self.ordering.criticality_label,
            use_risk=self.ordering.risk,
            approval_required=self.approval.required,
            allow_self_approval=self.approval.allow_self,
            dynamic=self.dynamic,
            hooks=core.Hooks(
                tuple(tuple(x) for x in self.hooks.pre), tuple(tuple(x) for x in self.hooks.post)
            ),
        )


class RolloutCreate(_Spec):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    release_id: int
    selector: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    strategy: StrategySpec = Field(default_factory=StrategySpec)


class ReasonBody(_Spec):
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""


class StartBody(ReasonBody):
    #: Zero-day path (admin only): ignore maintenance windows and soak times, never gates.
    emergency: bool = False


class AbortBody(ReasonBody):
    rollback: bool = False


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, from_attributes=True)


class WaveOut(_Out):
    index: int
    size: int
    waiting: int
    active: int
    succeeded: int
    failed: int
    skipped: int


class RiskRow(_Out):
    model: str
    from_release: str
    to_release: str
    success: float
    observed: int
    devices: int


class RolloutEventOut(_Out):
    at: datetime
    kind: str
    actor: str
    message: str
    counts: dict[str, int] | None = None


class RolloutOut(_Out):
    id: int
    name: str
    release_id: int
    release: str
    selector: str
    state: RolloutState
    emergency: bool
    reason: str
    current_wave: int
    wave_count: int
    created_by: str
    approved_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    strategy: dict[str, Any]
    totals: dict[str, int]
    waves: list[WaveOut] = Field(default_factory=list)
    risk: list[RiskRow] = Field(default_factory=list)
    events: list[RolloutEventOut] = Field(default_factory=list)


class MemberOut(_Out):
    device_id: str
    wave: int
    position: int
    status: str
    group_key: str
    model: str
    from_release: str
    assignment_id: int | None
    attempts: int


class WindowCreate(_Spec):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    cron: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    duration: Duration
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "UTC"
    selector: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class WindowOut(_Out):
    id: int
    name: str
    cron: str
    duration: Duration
    timezone: str
    selector: str
    open_now: bool
    next_open: datetime
