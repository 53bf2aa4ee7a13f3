"""Health checks after an install: commands whose exit status 0 means "healthy"."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Protocol

from fleetwarden.errors import HealthCheckFailed
from fleetwarden.protocol.device import HealthCheck

__all__ = ["CommandHealthChecker", "HealthChecker"]


class HealthChecker(Protocol):
    def check(self, checks: Sequence[HealthCheck], env: Mapping[str, str]) -> None:
        """Raises ``HealthCheckFailed`` naming the first failing check."""


class CommandHealthChecker:
    def check(self, checks: Sequence[HealthCheck], env: Mapping[str, str]) -> None:
        for hc in checks:
            argv = hc.command
            try:
                proc = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    timeout=hc.timeout_seconds,
                    env=dict(os.environ) | dict(env),
                    check=False,
                )
            except FileNotFoundError as e:
                raise HealthCheckFailed(f"health check {argv[0]!r} not found") from e
            except subprocess.TimeoutExpired as e:
                raise HealthCheckFailed(
                    f"health check {argv[0]!r} timed out after {hc.timeout_seconds}s"
                ) from e
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip()[-400:]
                raise HealthCheckFailed(
                    f"health check {' '.join(argv)!r} exited {proc.returncode}: {tail}"
                )
