"""``deb`` artifacts: install a set of .deb packages with real dpkg; roll back to the
previous versions on failure.

dpkg keeps no copies of replaced packages, so the agent does: after every committed install
it caches the .deb files under ``<state_dir>/cache``. Rolling back a package restores the
cached previous version, or purges the package if it was not installed before. A package
that was installed before fleetwarden managed it has no cached copy; its rollback fails with
a message saying so (the device then reports ``failed``, not a false ``rolled_back``).

``root`` other than "/" runs dpkg with ``--root`` (scratch trees in tests, image builders).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetwarden.agent.installers.base import InstallContext, Installer, InstallResult, run_command
from fleetwarden.errors import InstallError

__all__ = ["DebInstaller", "installed_packages"]

_KEEP_PER_PACKAGE = 3


def _dpkg(root: Path) -> list[str]:
    argv = ["dpkg"]
    if root != Path("/"):
        argv.append(f"--root={root}")
    if os.geteuid() != 0:
        argv.append("--force-not-root")
    return argv


def _admindir(root: Path) -> str:
    return str(root / "var/lib/dpkg")


def _fields(deb: Path) -> tuple[str, str, str]:
    out = run_command(
        ["dpkg-deb", "--show", "--showformat=${Package}\t${Version}\t${Architecture}", str(deb)],
        what=f"reading {deb.name}",
    )
    name, version, arch = ([*out.split("\t"), "", ""])[:3]
    if not name or not version:
        raise InstallError(f"{deb.name} is not a Debian package")
    return name, version, arch


def installed_version(root: Path, package: str) -> str | None:
    try:
        out = run_command(
            [
                "dpkg-query",
                f"--admindir={_admindir(root)}",
                "-W",
                "-f=${db:Status-Abbrev}\t${Version}",
                package,
            ],
            what=f"querying {package}",
        )
    except InstallError:
        return None  # dpkg-query exits 1 for unknown packages
    status, _, version = out.partition("\t")
    return version if status.startswith("ii") else None


def installed_packages(root: Path) -> list[tuple[str, str, str]]:
    """(name, version, arch) of every installed package; empty if dpkg is absent."""
    try:
        out = run_command(
            [
                "dpkg-query",
                f"--admindir={_admindir(root)}",
                "-W",
                "-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
            ],
            what="listing packages",
            timeout=60,
        )
    except InstallError:
        return []
    rows = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[0].startswith("ii"):
            rows.append((parts[1], parts[2], parts[3]))
    return rows


class DebInstaller(Installer):
    type = "deb"

    def _cache(self, ctx: InstallContext) -> Path:
        return ctx.state_dir / "cache"

    def preflight(self, ctx: InstallContext) -> None:
        if shutil.which("dpkg") is None:
            raise InstallError("dpkg is not installed on this device")
        if not Path(_admindir(ctx.root), "status").exists():
            raise InstallError(f"no dpkg database under {ctx.root}")
        for p in ctx.payloads:
            _fields(p.path)

    def prepare(self, ctx: InstallContext) -> Mapping[str, Any]:
        packages = []
        for p in ctx.payloads:
            name, version, arch = _fields(p.path)
            previous = installed_version(ctx.root, name)
            cached = self._cache(ctx) / f"{name}_{previous}_{arch}.deb" if previous else None
            packages.append(
                {
                    "name": name,
                    "version": version,
                    "arch": arch,
                    "previous": previous,
                    "previous_deb": str(cached) if cached and cached.exists() else None,
                }
            )
        return {"packages": packages}

    def install(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult:
        run_command(
            [*_dpkg(ctx.root), "--install", *(str(p.path) for p in ctx.payloads)],
            what="dpkg --install",
        )
        return InstallResult(needs_reboot=(ctx.root / "run/reboot-required").exists())

    def commit(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        cache = self._cache(ctx)
        cache.mkdir(parents=True, exist_ok=True)
        for p, pkg in zip(ctx.payloads, snapshot["packages"], strict=True):
            target = cache / f"{pkg['name']}_{pkg['version']}_{pkg['arch']}.deb"
            if not target.exists():
                shutil.copyfile(p.path, target)
            _prune(cache, pkg["name"], keep=_KEEP_PER_PACKAGE)

    def rollback(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        packages: Sequence[Mapping[str, Any]] = snapshot["packages"]
        missing = [
            f"{p['name']}={p['previous']}"
            for p in packages
            if p["previous"] and not p["previous_deb"]
        ]
        if missing:
            raise InstallError(
                "cannot roll back: no cached copy of the previous version of " + ", ".join(missing)
            )
        restore = [p["previous_deb"] for p in packages if p["previous_deb"]]
        purge = [p["name"] for p in packages if not p["previous"]]
        if restore:
            run_command(
                [*_dpkg(ctx.root), "--install", *restore], what="restoring previous packages"
            )
        if purge:
            run_command([*_dpkg(ctx.root), "--purge", *purge], what="removing newly added packages")


def _prune(cache: Path, name: str, *, keep: int) -> None:
    files = sorted(cache.glob(f"{name}_*.deb"), key=lambda f: f.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)
