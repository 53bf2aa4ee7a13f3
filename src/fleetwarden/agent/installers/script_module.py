"""``script-module`` artifacts: an executable that installs itself, following a small protocol.

The agent copies the artifact to ``<workdir>/module``, makes it executable and calls it as
``module <STATE>`` with the job's directory as the working directory. States, in order:

    download   stage whatever the module needs (it must not change the live system yet)
    install    apply the update
    commit     make it permanent (after the health checks passed)
    rollback   undo ``install`` (only called if the module answers yes to supports-rollback)

Queries (print one word on stdout, exit 0): ``needs-reboot`` → ``yes``/``no``;
``supports-rollback`` → ``yes``/``no``. A module that does not know a state or query must
exit 0 and print nothing, which means "no"/"nothing to do" — so old modules keep working
when new states are added. Non-zero exit = failure; the last 600 characters of its output
become the reported reason.

Environment: ``FLEETWARDEN_ASSIGNMENT_ID``, ``FLEETWARDEN_RELEASE``, ``FLEETWARDEN_ARTIFACT``
(name@version), ``FLEETWARDEN_ROOT`` (filesystem root to act on), ``FLEETWARDEN_WORKDIR``
(scratch, removed after the job), ``FLEETWARDEN_STATE_DIR`` (persists across jobs).
See docs/update-modules.md for an example.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetwarden.agent.installers.base import (
    InstallContext,
    Installer,
    InstallResult,
    Payload,
    run_command,
)
from fleetwarden.errors import InstallError

__all__ = ["ScriptModuleInstaller"]


class ScriptModuleInstaller(Installer):
    type = "script-module"

    def _module(self, ctx: InstallContext, index: int, payload: Payload) -> Path:
        path = ctx.workdir / f"module-{index}" / "module"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(payload.path, path)
            path.chmod(0o755)
        return path

    def _call(self, ctx: InstallContext, index: int, payload: Payload, state: str) -> str:
        module = self._module(ctx, index, payload)
        env = dict(os.environ) | {
            "FLEETWARDEN_ASSIGNMENT_ID": str(ctx.assignment_id),
            "FLEETWARDEN_RELEASE": ctx.release,
            "FLEETWARDEN_ARTIFACT": f"{payload.ref.name}@{payload.ref.version}",
            "FLEETWARDEN_ROOT": str(ctx.root),
            "FLEETWARDEN_WORKDIR": str(module.parent),
            "FLEETWARDEN_STATE_DIR": str(ctx.state_dir),
        }
        ctx.state_dir.mkdir(parents=True, exist_ok=True)
        return run_command(
            [str(module), state],
            what=f"module {payload.ref.name} {state}",
            env=env,
            cwd=module.parent,
        ).strip()

    def _ask(self, ctx: InstallContext, index: int, payload: Payload, query: str) -> bool:
        return self._call(ctx, index, payload, query).lower() == "yes"

    def prepare(self, ctx: InstallContext) -> Mapping[str, Any]:
        modules = []
        for i, p in enumerate(ctx.payloads):
            self._call(ctx, i, p, "download")
            modules.append({"rollback": self._ask(ctx, i, p, "supports-rollback")})
        return {"modules": modules}

    def install(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult:
        reboot = False
        for i, p in enumerate(ctx.payloads):
            self._call(ctx, i, p, "install")
            reboot = reboot or self._ask(ctx, i, p, "needs-reboot")
        return InstallResult(needs_reboot=reboot)

    def commit(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        for i, p in enumerate(ctx.payloads):
            self._call(ctx, i, p, "commit")

    def rollback(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        for i, p in reversed(list(enumerate(ctx.payloads))):
            if not snapshot["modules"][i]["rollback"]:
                raise InstallError(f"module {p.ref.name} does not support rollback")
            self._call(ctx, i, p, "rollback")
