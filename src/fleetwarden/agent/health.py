"""Health checks after an install: commands, systemd units and HTTP probes."""

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
    """Runs each kind of check for real: the command, ``systemctl is-active``, or an HTTP GET."""

    def check(self, checks: Sequence[HealthCheck], env: Mapping[str, str]) -> None:
        for hc in checks:
            if hc.http is not None:
                _http(hc.http, hc.timeout_seconds)
                continue
            argv = (
                hc.command
                if hc.command is not None
                else ["systemctl", "is-active", "--quiet", str(hc.systemd_unit)]
            )
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
                raise HealthCheckFailed(
                    f"health check {hc.describe()!r}: {argv[0]} not found"
                ) from e
            except subprocess.TimeoutExpired as e:
                raise HealthCheckFailed(
                    f"health check {hc.describe()!r} timed out after {hc.timeout_seconds}s"
                ) from e
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip()[-400:]
                what = "is not active" if hc.systemd_unit is not None else "exited"
                raise HealthCheckFailed(
                    f"health check {hc.describe()!r} {what} ({proc.returncode}): {tail}"
                )


def _http(url: str, timeout: float) -> None:
    import httpx

    try:
        r = httpx.get(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as e:
        raise HealthCheckFailed(f"health check GET {url} failed: {e}") from e
    if not 200 <= r.status_code < 300:
        raise HealthCheckFailed(f"health check GET {url} answered {r.status_code}")
