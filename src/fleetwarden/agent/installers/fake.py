"""A simulated installer for the fleet simulator and demos: it changes nothing on the host,
remembers what it "installed", and fails on request."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from fleetwarden.agent.installers.base import InstallContext, Installer, InstallResult
from fleetwarden.errors import InstallError

__all__ = ["FakeInstaller"]


class FakeInstaller(Installer):
    type = "fake"

    def __init__(
        self,
        *,
        failure_rate: float = 0.0,
        duration: float = 0.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        fails: Callable[[str], bool] | None = None,
    ) -> None:
        self.failure_rate = failure_rate
        #: Deterministic faults: installs of a release (name@version) for which this is true fail.
        self.fails = fails
        self.duration = duration
        self.rng = rng or random.Random()  # noqa: S311 - simulation, not security
        self.sleep = sleep
        self.installed: dict[str, str] = {}
        self._lock = threading.Lock()

    def prepare(self, ctx: InstallContext) -> Mapping[str, Any]:
        with self._lock:
            return {"previous": {p.ref.name: self.installed.get(p.ref.name) for p in ctx.payloads}}

    def install(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult:
        if self.duration:
            self.sleep(self.duration * (0.5 + self.rng.random()))
        with self._lock:
            for p in ctx.payloads:
                self.installed[p.ref.name] = p.ref.version
        if (
            self.fails is not None and self.fails(ctx.release)
        ) or self.rng.random() < self.failure_rate:
            raise InstallError("simulated install failure")
        return InstallResult()

    def rollback(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        with self._lock:
            for name, version in snapshot["previous"].items():
                if version is None:
                    self.installed.pop(name, None)
                else:
                    self.installed[name] = version
