"""Risk-aware ordering: who goes first in a rollout.

The risk model estimates, for each (hardware model, from-release, to-release), the probability
that an update succeeds, from every finished assignment so far: a Beta-binomial posterior. The
prior is itself learned, hierarchically: from the outcomes of all updates *to* this release
(any model, any starting point), shrunk toward a global prior of 90% success with the weight
of ten updates. So a combination never seen before inherits what is known about the release;
a release never seen before starts at the global prior.

Ordering: low business criticality first, then low predicted risk (high success probability),
then device id for a stable order. Criticality comes from a label; its value is a number or
one of low, medium, high, critical; a device without it counts as medium.

Rules:
  1. Every estimate lies strictly between 0 and 1.
  2. More successes never lower an estimate; more failures never raise it.
  3. ``order`` is a permutation of its input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "CRITICALITY",
    "Candidate",
    "Estimate",
    "Outcomes",
    "RiskModel",
    "criticality_rank",
    "order",
]

CRITICALITY = {"low": 0.0, "medium": 1.0, "normal": 1.0, "high": 2.0, "critical": 3.0}
GLOBAL_PRIOR_SUCCESS = 0.9
GLOBAL_PRIOR_WEIGHT = 10.0
RELEASE_PRIOR_WEIGHT = 10.0
_TINY = 1e-12


@dataclass(frozen=True, slots=True)
class Outcomes:
    succeeded: int = 0
    failed: int = 0

    def __add__(self, other: Outcomes) -> Outcomes:
        return Outcomes(self.succeeded + other.succeeded, self.failed + other.failed)


@dataclass(frozen=True, slots=True)
class Estimate:
    success: float
    observed: int  # finished updates of exactly this (model, from, to)

    @property
    def risk(self) -> float:
        return 1.0 - self.success


Key = tuple[str, str, str]  # (hardware model, from release, to release)


class RiskModel:
    """Posterior success probabilities from a history of outcomes per key."""

    def __init__(self, history: Mapping[Key, Outcomes]) -> None:
        self.history = dict(history)
        self._by_release: dict[str, Outcomes] = {}
        for (_, _, to), o in self.history.items():
            self._by_release[to] = self._by_release.get(to, Outcomes()) + o

    def _release_prior(self, to: str) -> tuple[float, float]:
        o = self._by_release.get(to, Outcomes())
        n = o.succeeded + o.failed
        mean = (GLOBAL_PRIOR_SUCCESS * GLOBAL_PRIOR_WEIGHT + o.succeeded) / (
            GLOBAL_PRIOR_WEIGHT + n
        )
        return mean * RELEASE_PRIOR_WEIGHT, (1 - mean) * RELEASE_PRIOR_WEIGHT

    def estimate(self, model: str, from_release: str, to_release: str) -> Estimate:
        alpha, beta = self._release_prior(to_release)
        o = self.history.get((model, from_release, to_release), Outcomes())
        p = (alpha + o.succeeded) / (alpha + beta + o.succeeded + o.failed)
        # Rule 1 in floating point: with huge counts the quotient rounds to exactly 0 or 1.
        p = min(max(p, _TINY), 1.0 - _TINY)
        return Estimate(p, o.succeeded + o.failed)


def criticality_rank(value: str | None) -> float:
    if value is None:
        return CRITICALITY["medium"]
    try:
        return float(value)
    except ValueError:
        return CRITICALITY.get(value.strip().lower(), CRITICALITY["medium"])


@dataclass(frozen=True, slots=True)
class Candidate:
    device_id: str
    hardware_model: str
    from_release: str
    criticality: str | None = None


def order(
    candidates: Sequence[Candidate], *, to_release: str, model: RiskModel | None
) -> list[str]:
    """Device ids, lowest criticality and lowest risk first (rule 3: a permutation)."""
    cache: dict[tuple[str, str], float] = {}

    def success(c: Candidate) -> float:
        if model is None:
            return 0.0
        key = (c.hardware_model, c.from_release)
        if key not in cache:
            cache[key] = model.estimate(c.hardware_model, c.from_release, to_release).success
        return cache[key]

    ranked = sorted(
        candidates, key=lambda c: (criticality_rank(c.criticality), -success(c), c.device_id)
    )
    return [c.device_id for c in ranked]


def history_from(rows: Iterable[tuple[str, str, str, bool]]) -> dict[Key, Outcomes]:
    """Fold (model, from, to, succeeded) rows into per-key outcomes."""
    out: dict[Key, Outcomes] = {}
    for model, frm, to, ok in rows:
        key = (model, frm, to)
        prev = out.get(key, Outcomes())
        out[key] = Outcomes(prev.succeeded + ok, prev.failed + (not ok))
    return out
