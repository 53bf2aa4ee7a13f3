"""Dashboard pages for staged rollouts: the list, one rollout's page (waves, a progress chart,
risk estimates, the timeline) and the operator's verbs as plain HTML forms.

The verbs call ``services.rollouts.act`` like the REST API does, with the API's role rules:
approve and deny need the approver role, an emergency start needs admin, the rest operator.
The service enforces four eyes and the lifecycle; its refusals are shown on the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fleetwarden.core.durations import render_duration
from fleetwarden.core.rollout.lifecycle import TRANSITIONS, RolloutState, Verb
from fleetwarden.errors import FleetwardenError, InputError, NotFoundError, PermissionDenied
from fleetwarden.protocol.api import Role
from fleetwarden.protocol.rollouts import RolloutEventOut, RolloutOut, StrategySpec
from fleetwarden.server.api.errors import status_for
from fleetwarden.server.context import ServerContext
from fleetwarden.server.services import rollouts
from fleetwarden.server.services.rollouts import CONTROLLER
from fleetwarden.server.services.tokens import Principal
from fleetwarden.server.web.common import Ctx, Who, templates

__all__ = ["Chart", "progress_chart", "router", "verb_buttons"]

router = APIRouter()
MAX_REASON = 1024  # as the API's ReasonBody


# -- verbs ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VerbButton:
    verb: Verb
    label: str
    role: Role
    danger: bool = False

    @property
    def slug(self) -> str:
        return self.verb.value.replace("_", "-")


#: The operator's verbs in the order the page offers them (the controller's own verbs —
#: gate_pause, finish, rollback_done — are never buttons).
BUTTONS = [
    VerbButton(Verb.APPROVE, "Approve", Role.APPROVER),
    VerbButton(Verb.DENY, "Deny", Role.APPROVER, danger=True),
    VerbButton(Verb.START, "Start", Role.OPERATOR),
    VerbButton(Verb.RESUME, "Resume", Role.OPERATOR),
    VerbButton(Verb.PAUSE, "Pause", Role.OPERATOR),
    VerbButton(Verb.ADVANCE, "Advance to next wave", Role.OPERATOR),
    VerbButton(Verb.RETRY_FAILED, "Retry failed", Role.OPERATOR),
    VerbButton(Verb.ABORT, "Abort", Role.OPERATOR, danger=True),
    VerbButton(Verb.ABORT_AND_ROLLBACK, "Abort and roll back", Role.OPERATOR, danger=True),
]
_BY_SLUG = {b.slug: b for b in BUTTONS}


def verb_buttons(r: RolloutOut, who: Principal) -> list[VerbButton]:
    """The verbs legal in the rollout's state that this principal's role may use."""
    legal = TRANSITIONS[r.state]
    shown = []
    for b in BUTTONS:
        if b.verb not in legal or not who.allows(b.role):
            continue
        if b.verb is Verb.ADVANCE and r.current_wave >= r.wave_count - 1:
            continue  # the service refuses: there is no next wave
        if b.verb is Verb.RETRY_FAILED and not r.totals.get("failed"):
            continue  # nothing to retry
        shown.append(b)
    return shown


# -- progress chart ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float
    at: datetime
    value: int


@dataclass(frozen=True, slots=True)
class Series:
    key: str
    points: list[Point]

    @property
    def path(self) -> str:
        """A step line: a count holds until the next snapshot."""
        out: list[str] = []
        for i, p in enumerate(self.points):
            if i:
                out.append(f"{p.x:.1f},{self.points[i - 1].y:.1f}")
            out.append(f"{p.x:.1f},{p.y:.1f}")
        return " ".join(out)


@dataclass(frozen=True, slots=True)
class Chart:
    """Geometry of the inline SVG progress chart (the template only draws it)."""

    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    series: list[Series]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    samples: int
    last: dict[str, int]
    last_at: datetime


_SERIES = ("succeeded", "failed", "active")
_UNDER_WAY = (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.ROLLING_BACK)


#: Tick spacings for the time axis, in seconds (ticks sit on multiples of these, in UTC).
_TIME_STEPS: tuple[float, ...] = (
    *(0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600),
    *(7200, 10800, 21600, 43200, 86400, 172800, 604800, 2592000),
)


def _count_step(top: int, ticks: int = 4) -> int:
    """1, 2, 5, 10, 20, 50, ...: the smallest that needs at most ``ticks`` steps to ``top``."""
    raw, scale = max(1, top) / ticks, 1
    while True:
        for base in (1, 2, 5):
            if base * scale >= raw:
                return base * scale
        scale *= 10


def _time_ticks(t0: datetime, span: float, ticks: int = 5) -> list[tuple[datetime, str]]:
    step = next((x for x in _TIME_STEPS if span / x <= ticks), _TIME_STEPS[-1])
    if step < 1:
        fmt = "%H:%M:%S.%f"
    elif step < 60:
        fmt = "%H:%M:%S"
    elif span < 86_400:
        fmt = "%H:%M"
    else:
        fmt = "%m-%d %H:%M" if step < 86_400 else "%Y-%m-%d"
    start = t0.timestamp()
    first = math.ceil(start / step - 1e-9) * step
    out = []
    for i in range(ticks + 2):
        at = first + i * step
        if at > start + span + 1e-6:
            break
        when = datetime.fromtimestamp(at, UTC)
        label = when.strftime(fmt)
        out.append((when, label[:-5] if fmt.endswith("%f") else label))  # tenths of a second
    return out or [(t0, t0.strftime("%H:%M:%S"))]


def progress_chart(
    r: RolloutOut, now: datetime, *, width: int = 760, height: int = 240
) -> Chart | None:
    """Succeeded, failed and active devices over time, from the controller's "progress"
    snapshots, plus the current totals while the rollout is under way; None before any."""
    samples = [(e.at, e.counts) for e in reversed(r.events) if e.kind == "progress" and e.counts]
    if not samples:
        return None
    end = now if r.state in _UNDER_WAY else r.finished_at
    if end is not None and end > samples[-1][0]:
        samples.append((end, r.totals))
    left, right, top, bottom = 52, width - 32, 14, height - 42
    t0, t1 = samples[0][0], samples[-1][0]
    span = (t1 - t0).total_seconds()
    y_max = max(
        1, r.totals.get("total", 0), *(sum(c.get(k, 0) for k in _SERIES) for _, c in samples)
    )
    step = _count_step(y_max)
    y_top = -(-y_max // step) * step

    def x_of(at: datetime) -> float:
        return left + (right - left) * (at - t0).total_seconds() / (span or 1.0)

    def y_of(n: int) -> float:
        return bottom - (bottom - top) * n / y_top

    series = [
        Series(key, [Point(x_of(at), y_of(c.get(key, 0)), at, c.get(key, 0)) for at, c in samples])
        for key in _SERIES
    ]
    x_ticks = [(x_of(at), label) for at, label in _time_ticks(t0, span)]
    y_ticks = [(y_of(n), str(n)) for n in range(0, y_top + 1, step)]
    return Chart(
        width=width,
        height=height,
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        series=series,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        samples=len(samples),
        last=dict(samples[-1][1]),
        last_at=samples[-1][0],
    )


# -- what the page says about the state -------------------------------------------------------
#: The events whose reason explains the state the rollout is in.
_CAUSES: dict[RolloutState, tuple[str, ...]] = {
    RolloutState.PAUSED: (Verb.PAUSE.value, Verb.GATE_PAUSE.value),
    RolloutState.ABORTED: (Verb.ABORT.value, Verb.ABORT_AND_ROLLBACK.value),
    RolloutState.ROLLING_BACK: (Verb.ABORT_AND_ROLLBACK.value, Verb.ABORT.value),
    RolloutState.DENIED: (Verb.DENY.value,),
}
_TITLES = {
    RolloutState.PAUSED: "Paused",
    RolloutState.ABORTED: "Aborted",
    RolloutState.ROLLING_BACK: "Aborted, rolling back",
    RolloutState.DENIED: "Denied",
}
EVENT_LABELS = {
    "created": "created",
    "wave_gate": "success gate",
    "wave": "wave started",
    "gate_pause": "gate: pause",
    "abort_and_rollback": "abort + rollback",
    "retry_failed": "retry failed",
    "rollback_done": "rollback done",
}


@dataclass(frozen=True, slots=True)
class Cause:
    title: str
    reason: str
    event: RolloutEventOut | None
    by_controller: bool


def cause(r: RolloutOut) -> Cause | None:
    """Why the rollout is paused, aborted or denied, and who or what did it."""
    kinds = _CAUSES.get(r.state)
    if kinds is None:
        return None
    ev = next((e for e in r.events if e.kind in kinds), None)
    return Cause(
        title=_TITLES[r.state],
        reason=r.reason,
        event=ev,
        by_controller=ev is not None and ev.actor == CONTROLLER,
    )


def strategy_facts(r: RolloutOut) -> list[tuple[str, str]]:
    """The strategy in a few lines, as an operator checks it before approving."""
    try:
        s = StrategySpec.model_validate(r.strategy)
    except ValueError:
        return [("Strategy", "unreadable")]
    c, w, g = s.canary, s.waves, s.gates
    if c.count is not None:
        canary = f"{c.count} device{'' if c.count == 1 else 's'}"
    else:
        canary = f"{c.percent:g}%" if c.percent else "none"
    if c.selector:
        canary += f", preferring {c.selector}"
    size = f"{w.size:g}%" if w.kind.value == "percent" else f"{w.size:g}"
    waves = f"{w.kind.value} {size}" + (
        f", growing x{w.factor:g}" if w.kind.value == "exponential" else ""
    )
    waves += f", {w.advance} advance" + (f", soak {render_duration(w.soak)}" if w.soak else "")
    limits = []
    if g.failure_percent is not None:
        limits.append(f"{g.failure_percent:g}%")
    if g.failure_count is not None:
        limits.append(f"{g.failure_count} device(s)")
    gates = f"continue at {g.success_percent:g}% succeeded; "
    gates += (
        f"{g.on_failure.value.replace('_', ' ')} at {' or '.join(limits)} failed"
        if limits
        else "no failure gate"
    )
    gates += f" (after {g.min_finished} finished)"
    budget = (
        f"{s.budget.max_in_progress or '∞'} in progress per {s.budget.group_by}"
        if s.budget is not None
        else "none"
    )
    approval = ("required" if s.approval.required else "not required") + (
        ", self-approval allowed" if s.approval.allow_self else ""
    )
    return [
        ("Canary", canary),
        ("Waves", waves),
        ("Gates", gates),
        ("Budget", budget),
        ("Windows", "respected" if s.windows.respect else "ignored"),
        ("Approval", approval),
    ]


# -- pages ------------------------------------------------------------------------------------
def _find(ctx: ServerContext, rollout_id: str) -> RolloutOut | None:
    if not rollout_id.isdigit() or len(rollout_id) > 18:
        return None
    try:
        return rollouts.get(ctx, int(rollout_id))
    except NotFoundError:
        return None


def _not_found(request: Request, who: Principal, rollout_id: str) -> Response:
    return templates.TemplateResponse(
        request, "not_found.html", {"who": who, "what": f"rollout {rollout_id}"}, status_code=404
    )


def _live_context(ctx: ServerContext, r: RolloutOut, who: Principal) -> dict[str, object]:
    buttons = verb_buttons(r, who)
    return {
        "r": r,
        "who": who,
        "buttons": buttons,
        "can_approve": who.allows(Role.APPROVER),
        "approval_required": r.strategy.get("approval", {}).get("required", True),
        "can_emergency": who.allows(Role.ADMIN) and any(b.verb is Verb.START for b in buttons),
        "chart": progress_chart(r, ctx.clock()),
        "cause": cause(r),
        "strategy": strategy_facts(r),
        "timeline": [e for e in r.events if e.kind != "progress"],
        "event_labels": EVENT_LABELS,
        "started_by": next((e.actor for e in r.events if e.kind == Verb.START.value), None),
        "controller": CONTROLLER,
    }


def _page(
    request: Request,
    ctx: ServerContext,
    r: RolloutOut,
    who: Principal,
    *,
    error: str | None = None,
    reason: str = "",
    status_code: int = 200,
) -> Response:
    context_ = _live_context(ctx, r, who) | {"page": "rollouts", "error": error, "reason": reason}
    return templates.TemplateResponse(request, "rollout.html", context_, status_code=status_code)


@router.get("/rollouts", response_class=HTMLResponse)
def rollout_list(request: Request, ctx: Ctx, who: Who) -> Response:
    return templates.TemplateResponse(
        request,
        "rollouts.html",
        {"who": who, "items": rollouts.list_rollouts(ctx), "page": "rollouts"},
    )


@router.get("/fragments/rollouts", response_class=HTMLResponse)
def rollout_rows(request: Request, ctx: Ctx, who: Who) -> Response:
    return templates.TemplateResponse(
        request, "_rollout_rows.html", {"items": rollouts.list_rollouts(ctx)}
    )


@router.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
def rollout_page(request: Request, rollout_id: str, ctx: Ctx, who: Who) -> Response:
    r = _find(ctx, rollout_id)
    if r is None:
        return _not_found(request, who, rollout_id)
    return _page(request, ctx, r, who)


@router.get("/fragments/rollouts/{rollout_id}", response_class=HTMLResponse)
def rollout_live(request: Request, rollout_id: str, ctx: Ctx, who: Who) -> Response:
    r = _find(ctx, rollout_id)
    if r is None:
        return _not_found(request, who, rollout_id)
    return templates.TemplateResponse(
        request, "_rollout_live.html", _live_context(ctx, r, who) | {"reason": ""}
    )


@router.post("/rollouts/{rollout_id}/{action}")
def rollout_act(
    request: Request,
    rollout_id: str,
    action: str,
    ctx: Ctx,
    who: Who,
    reason: Annotated[str, Form()] = "",
    emergency: Annotated[bool, Form()] = False,
) -> Response:
    """One verb from the page's form; back to the page, or the page with the refusal."""
    button = _BY_SLUG.get(action)
    r = _find(ctx, rollout_id)
    if r is None or button is None:
        return _not_found(request, who, f"{rollout_id}/{action}" if r else rollout_id)
    reason = reason.strip()
    error: FleetwardenError | None = None
    if len(reason) > MAX_REASON:
        error = InputError(f"the reason is longer than {MAX_REASON} characters")
    elif not who.allows(button.role):
        error = PermissionDenied(
            f"your role ({who.role.value}) cannot {button.label.lower()}: "
            f"that needs the {button.role.value} role"
        )
    else:
        try:
            rollouts.act(
                ctx,
                r.id,
                button.verb,
                who=who,
                reason=reason,
                emergency=emergency and button.verb is Verb.START,
            )
        except FleetwardenError as e:
            error = e
    if error is None:
        return RedirectResponse(f"/ui/rollouts/{r.id}", status_code=303)
    fresh = _find(ctx, rollout_id) or r  # show the state the verb was refused in
    return _page(
        request, ctx, fresh, who, error=str(error), reason=reason, status_code=status_for(error)
    )
