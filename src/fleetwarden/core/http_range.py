"""HTTP ``Range`` requests (RFC 9110 §14) for resumable artifact downloads.

Rules:
  1. Only the ``bytes`` unit and a single range are honoured. Anything else that is
     syntactically odd (other units, several ranges, garbage) is ignored and the whole content
     is served, as RFC 9110 §14.2 allows ("a server MAY ignore the Range header field").
  2. A well-formed single range that starts at or beyond the end of the content is
     unsatisfiable: ``RangeNotSatisfiable`` (→ 416 with ``Content-Range: bytes */size``).
  3. The returned span is half-open ``[start, stop)`` and always lies within ``[0, size]``;
     a last-byte position beyond the end is clamped to the end (§14.1.2).
  4. ``bytes=-N`` is the last N bytes; ``-0`` is unsatisfiable.
"""

from __future__ import annotations

import re

from fleetwarden.errors import RangeNotSatisfiable

__all__ = ["parse_range"]

_SINGLE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")
_MAX_DIGITS = 19  # fits in a signed 64-bit offset; longer numbers are not a real request


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return ``(start, stop)`` to serve, or ``None`` to serve the whole content.

    Raises:
        RangeNotSatisfiable: a single well-formed range lies outside the content.
    """
    if header is None:
        return None
    m = _SINGLE.fullmatch(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if (not first and not last) or len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size
    start = int(first)
    stop = size if not last else int(last) + 1
    if last and stop <= start:
        return None  # last < first: syntactically invalid, so ignored (§14.1.2)
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, min(stop, size)
