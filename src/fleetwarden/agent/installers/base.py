"""The installer interface: how one type of artifact is put on a device, and taken off again.

Contract (the agent relies on it for crash safety):
  1. ``prepare`` records, as JSON-able data, everything ``rollback`` will need; the agent
     journals it *before* ``install`` starts.
  2. ``install``, ``commit`` and ``rollback`` are idempotent: after a power cut the agent may
     call the same one again with the same arguments.
  3. ``rollback`` is safe to call even if ``install`` never ran or stopped half-way.
  4. Every failure is raised as ``InstallError`` with a message an operator can act on.
"""

from __future__ import annotations

import abc
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from fleetwarden.errors import InstallError
from fleetwarden.protocol.device import ArtifactRef

__all__ = ["InstallContext", "InstallResult", "Installer", "Payload", "run_command"]


@dataclass(frozen=True)
class Payload:
    """One downloaded, verified artifact."""

    ref: ArtifactRef
    path: Path


@dataclass(frozen=True)
class InstallContext:
    assignment_id: int
    release: str
    payloads: Sequence[Payload]
    #: Scratch space for this job, removed when the job ends.
    workdir: Path
    #: Persistent space for this installer type (caches, previous versions).
    state_dir: Path
    #: Filesystem root the installer acts on ("/" on a real device).
    root: Path


@dataclass(frozen=True)
class InstallResult:
    needs_reboot: bool = False


class Installer(abc.ABC):
    type: ClassVar[str]

    def preflight(self, ctx: InstallContext) -> None:
        """Refuse early (before anything changes) if the install cannot work here."""

    def prepare(self, ctx: InstallContext) -> Mapping[str, Any]:
        return {}

    @abc.abstractmethod
    def install(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult: ...

    def verify_boot(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        """After the reboot an install asked for, before the health checks: raise
        ``InstallError`` if the device did not come up as installed (e.g. the boot loader
        fell back to the old slot). The job then rolls back with that reason."""

    def commit(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        """Make the install permanent (drop backups, cache the new version)."""

    @abc.abstractmethod
    def rollback(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult | None:
        """Undo the install. Return ``InstallResult(needs_reboot=True)`` if the device must
        restart to be back on the old version (an A/B device running the new slot)."""


def run_command(
    argv: Sequence[str],
    *,
    what: str,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run a command; return stdout. Raises ``InstallError`` with the tail of its output."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError as e:
        raise InstallError(f"{what}: {argv[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise InstallError(f"{what}: timed out after {timeout:.0f}s") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-600:]
        raise InstallError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout
