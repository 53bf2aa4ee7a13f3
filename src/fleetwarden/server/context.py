"""Everything a request or a background job needs, built once by ``create_app``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from fleetwarden.server.blobs import ArtifactStore
from fleetwarden.server.db import Database
from fleetwarden.server.metrics import Metrics
from fleetwarden.server.pki import DeviceCAs
from fleetwarden.server.settings import Settings
from fleetwarden.server.tuf.service import TufService

__all__ = ["Clock", "Presence", "ServerContext", "system_clock"]

Clock = Callable[[], datetime]
T = TypeVar("T")


def system_clock() -> datetime:
    return datetime.now(UTC)


class Presence:
    """ "Last seen" times collected from polls, written in batches by a background job.

    An unchanged poll must not write to the database (DESIGN §4); instead each replica keeps
    the times here and ``jobs.flush_presence`` writes them with one statement per interval.
    """

    def __init__(self) -> None:
        self._seen: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def saw(self, device_id: str, at: datetime) -> None:
        with self._lock:
            self._seen[device_id] = at

    def drain(self) -> dict[str, datetime]:
        with self._lock:
            seen, self._seen = self._seen, {}
        return seen

    def __len__(self) -> int:
        return len(self._seen)


@dataclass
class ServerContext:
    settings: Settings
    db: Database
    store: ArtifactStore
    ca: DeviceCAs
    secret: bytes
    metrics: Metrics
    tuf: TufService
    clock: Clock = system_clock
    presence: Presence = field(default_factory=Presence)
    #: Set when something a rollout waits for happened (device feedback, a verb), so this
    #: replica's controller ticks now instead of at its next interval.
    controller_wakeup: threading.Event = field(default_factory=threading.Event)

    _memo: dict[str, tuple[float, Any]] = field(default_factory=dict)

    def wake_controller(self) -> None:
        self.controller_wakeup.set()

    def due(self, key: str, every: float) -> bool:
        """True at most once per ``every`` seconds per key in this replica (throttles costly
        periodic work, such as rescanning the fleet for a dynamic rollout)."""
        now = time.monotonic()
        last = self._memo.get(f"due:{key}")
        if last is not None and now - last[0] < every:
            return False
        self._memo[f"due:{key}"] = (now, None)
        return True

    def memo(self, key: str, ttl: float, compute: Callable[[], T]) -> T:
        """A value computed at most every ``ttl`` seconds in this replica (for costly
        aggregates that dashboards poll, like the rollout risk model)."""
        now = time.monotonic()
        hit = self._memo.get(key)
        if hit is not None and now - hit[0] < ttl:
            return cast("T", hit[1])
        value = compute()
        self._memo[key] = (now, value)
        return value
