"""``swu`` artifacts: SWUpdate bundles, installed by the device's own ``swupdate``.

For devices already built around SWUpdate: the agent verifies and downloads the ``.swu`` as
any artifact (TUF), then hands it to ``swupdate -i FILE -k CERT``, which checks the bundle's
own CMS signature and runs its handlers (raw, rawfile, archive, bootloader …). Which slot the
bundle writes and how the boot loader falls back are the bundle's and the device's SWUpdate
configuration; this installer maps the outcome to ours: exit 0 is installed (with a reboot if
configured), anything else fails with SWUpdate's own error lines. There is nothing to undo
after a failed ``swupdate`` (it writes the inactive copy or nothing), so ``rollback`` only
records that fact.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetwarden.agent.installers.base import InstallContext, Installer, InstallResult
from fleetwarden.errors import InstallError

__all__ = ["SwupdateInstaller"]

_SUCCEEDED = "SWUPDATE successful"
_FAILED = "SWUpdate *failed*"


class SwupdateInstaller(Installer):
    type = "swu"

    def __init__(
        self,
        public_key: Path,
        *,
        binary: str = "swupdate",
        extra_args: Sequence[str] = (),
        reboot: bool = True,
        timeout: float = 3600,
    ) -> None:
        self.public_key = public_key
        self.binary = binary
        self.extra_args = list(extra_args)
        self.reboot = reboot
        self.timeout = timeout

    def preflight(self, ctx: InstallContext) -> None:
        if not self.public_key.is_file():
            raise InstallError(f"SWUpdate public key {self.public_key} is missing")
        for p in ctx.payloads:
            # -c: SWUpdate checks the bundle (signature, sw-description) and installs nothing.
            self._run(["-c", "-i", str(p.path)], what=f"swupdate check of {p.ref.name}")

    def install(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult:
        for p in ctx.payloads:
            self._run(["-i", str(p.path)], what=f"swupdate install of {p.ref.name}")
        return InstallResult(needs_reboot=self.reboot)

    def rollback(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        """SWUpdate wrote the inactive copy or nothing; the boot loader keeps the old one."""

    def _run(self, args: list[str], *, what: str) -> None:
        """Run swupdate; its own final status line decides.

        Debian 12's swupdate 2022.12 now and then exits 1 after printing "SWUPDATE
        successful" (a race in its shutdown; about one run in five on a 2-core machine), so a
        run counts as failed when it says it failed or exits non-zero without saying it
        succeeded.
        """
        argv = [self.binary, "-k", str(self.public_key), *self.extra_args, *args]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except FileNotFoundError as e:
            raise InstallError(f"{what}: {self.binary} is not installed") from e
        except subprocess.TimeoutExpired as e:
            raise InstallError(f"{what}: timed out after {self.timeout:.0f}s") from e
        out = proc.stdout + proc.stderr
        failed = _FAILED in out or (proc.returncode != 0 and _SUCCEEDED not in out)
        if failed:
            errors = [line for line in out.splitlines() if "[ERROR]" in line]
            tail = "\n".join(errors[-8:]) or out.strip()[-600:]
            raise InstallError(f"{what} failed (exit {proc.returncode}): {tail}")
