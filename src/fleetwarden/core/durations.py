"""Durations as operators write them: ``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``, or seconds.

Rules:
  1. ``parse(render(d)) == d`` for every whole-second duration.
  2. Anything else is an ``InputError`` naming the text.
"""

from __future__ import annotations

import re
from datetime import timedelta

from fleetwarden.errors import InputError

__all__ = ["parse_duration", "render_duration"]

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d{1,9})([dhms])")
_WHOLE = re.compile(r"(?:\d{1,9}[dhms])+")
_MAX = timedelta(days=3650)


def parse_duration(value: str | float) -> timedelta:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 <= value <= _MAX.total_seconds():
            raise InputError(f"duration {value!r} is out of range")
        return timedelta(seconds=value)
    text = str(value).strip().lower()
    if text.isdigit() and len(text) <= 9:
        return timedelta(seconds=int(text))
    if not _WHOLE.fullmatch(text):
        raise InputError(f"not a duration: {value!r} (use e.g. 90s, 30m, 2h, 1d, 1h30m)")
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))
    if seconds > _MAX.total_seconds():
        raise InputError(f"duration {value!r} is out of range")
    return timedelta(seconds=seconds)


def render_duration(d: timedelta) -> str:
    total = int(d.total_seconds())
    if total == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        n, total = divmod(total, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)
