"""Crash points for the crash-safety tests: with ``FLEETWARDEN_AGENT_CRASH_AT=N`` the agent
kills itself with SIGKILL at the N-th crash point it passes (journal writes, download and
slot-write chunks, boot-environment writes), so a test can stop it at any of them, chosen at
random. ``FLEETWARDEN_AGENT_CRASH_COUNT=FILE`` records how many points a run passed. Never set
either on a real device; unset, ``hit`` costs one comparison."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

__all__ = ["hit"]

_AT = int(os.environ.get("FLEETWARDEN_AGENT_CRASH_AT") or 0)
_COUNT_FILE = os.environ.get("FLEETWARDEN_AGENT_CRASH_COUNT") or None
_passed = 0


def hit(name: str) -> None:
    global _passed  # noqa: PLW0603 - one process-wide counter, by design
    if not _AT and _COUNT_FILE is None:
        return
    _passed += 1
    if _COUNT_FILE is not None:
        Path(_COUNT_FILE).write_text(str(_passed))
    if _passed == _AT:
        sys.stderr.write(f"fleetwarden-agent: crash point {_passed} ({name})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
