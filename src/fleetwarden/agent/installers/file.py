"""``file`` artifacts: place one file atomically at ``meta.path``; keep the previous one.

The destination is resolved under the agent's ``root`` and may not escape it (``..`` or a
symlinked parent pointing elsewhere are refused).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetwarden.agent.installers.base import InstallContext, Installer, InstallResult, Payload
from fleetwarden.errors import InstallError

__all__ = ["FileInstaller"]


def _destination(ctx: InstallContext, payload: Payload) -> Path:
    raw = payload.ref.meta.get("path", "")
    if not raw.startswith("/") or ".." in Path(raw).parts:
        raise InstallError(
            f"artifact {payload.ref.name}: meta path {raw!r} is not an absolute path"
        )
    dest = ctx.root / raw.lstrip("/")
    root = ctx.root.resolve()
    parent = dest.parent.resolve()
    if parent != root and root not in parent.parents:
        raise InstallError(f"artifact {payload.ref.name}: {raw} resolves outside {ctx.root}")
    return parent / dest.name


def _place(src: Path, dest: Path, mode: int | None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.fleetwarden-new")
    shutil.copyfile(src, tmp)
    if mode is not None:
        os.chmod(tmp, mode)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


class FileInstaller(Installer):
    type = "file"

    def preflight(self, ctx: InstallContext) -> None:
        for p in ctx.payloads:
            _destination(ctx, p)

    def prepare(self, ctx: InstallContext) -> Mapping[str, Any]:
        files = []
        for i, p in enumerate(ctx.payloads):
            dest = _destination(ctx, p)
            backup = ctx.workdir / "file-backup" / str(i)
            existed = dest.is_file()
            if existed:
                backup.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(dest, backup)
            files.append({"dest": str(dest), "existed": existed, "backup": str(backup)})
        return {"files": files}

    def install(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult:
        for p, f in zip(ctx.payloads, snapshot["files"], strict=True):
            mode = p.ref.meta.get("mode")
            try:
                _place(p.path, Path(f["dest"]), int(mode, 8) if mode else None)
            except OSError as e:
                raise InstallError(f"cannot write {f['dest']}: {e}") from e
        return InstallResult()

    def commit(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        # Keep the replaced file beside the state dir as "previous", for manual recovery.
        for f in snapshot["files"]:
            if f["existed"] and Path(f["backup"]).exists():
                keep = (
                    ctx.state_dir
                    / "previous"
                    / Path(f["dest"]).relative_to("/").as_posix().replace("/", "%")
                )
                keep.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f["backup"], keep)

    def rollback(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        for f in snapshot["files"]:
            dest = Path(f["dest"])
            try:
                if f["existed"]:
                    _place(Path(f["backup"]), dest, None)
                    shutil.copystat(f["backup"], dest)
                else:
                    dest.unlink(missing_ok=True)
            except OSError as e:
                raise InstallError(f"cannot restore {dest}: {e}") from e
