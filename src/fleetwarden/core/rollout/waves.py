"""Splitting an ordered target set into waves.

Rules:
  1. Waves are disjoint and together contain every target exactly once.
  2. The canary is wave 0 when it is non-empty; devices matching the canary selector fill it
     first (in the given order), the rest of it comes from the front of the order.
  3. Apart from the canary, waves keep the given order: wave k never holds a device that comes
     after one in wave k+1.
  4. No wave is empty.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from fleetwarden.core.rollout.strategy import Canary, WaveKind, WaveSpec

__all__ = ["plan_waves", "wave_sizes"]

_MAX_WAVES = 1000


def wave_sizes(spec: WaveSpec, total: int) -> list[int]:
    """Sizes of the waves after the canary, for ``total`` remaining devices."""
    sizes: list[int] = []
    remaining = total
    step = spec.size
    while remaining > 0:
        if spec.kind is WaveKind.PERCENT:
            n = max(1, math.ceil(total * spec.size / 100))
        elif spec.kind is WaveKind.FIXED:
            n = max(1, math.ceil(spec.size))
        else:
            n = max(1, math.ceil(step))
            step *= max(spec.factor, 1.0)
        if len(sizes) == _MAX_WAVES - 1:
            n = remaining  # a sane cap: the last wave takes the rest
        n = min(n, remaining)
        sizes.append(n)
        remaining -= n
    return sizes


def plan_waves(
    ordered: Sequence[str], *, canary: Canary, canary_matches: Collection[str], spec: WaveSpec
) -> list[list[str]]:
    n_canary = canary.size(len(ordered))
    preferred = [d for d in ordered if d in canary_matches][:n_canary]
    chosen = set(preferred)
    for d in ordered:
        if len(preferred) >= n_canary:
            break
        if d not in chosen:
            preferred.append(d)
            chosen.add(d)
    rest = [d for d in ordered if d not in chosen]
    waves: list[list[str]] = [preferred] if preferred else []
    i = 0
    for size in wave_sizes(spec, len(rest)):
        waves.append(rest[i : i + size])
        i += size
    return waves
