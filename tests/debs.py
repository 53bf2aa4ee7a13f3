"""Build real .deb packages and scratch dpkg roots for tests (needs dpkg-deb)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def build_deb(
    out_dir: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    modes: dict[str, int] | None = None,
) -> Path:
    """A binary package installing ``files`` (absolute paths → content)."""
    tree = out_dir / f"build-{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: tests <t@example.invalid>\n"
        f"Description: test package {name}\n"
    )
    for path, content in files.items():
        dest = tree / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
        dest.chmod((modes or {}).get(path, 0o644))
    deb = out_dir / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def init_dpkg_root(root: Path) -> Path:
    """An empty dpkg database under ``root`` so `dpkg --root` can install into it."""
    admin = root / "var/lib/dpkg"
    for sub in ("info", "updates", "triggers", "alternatives"):
        (admin / sub).mkdir(parents=True, exist_ok=True)
    for f in ("status", "available"):
        (admin / f).touch()
    (root / "etc").mkdir(exist_ok=True)
    return root


def installed_version(root: Path, name: str) -> str | None:
    """The version dpkg records as installed under ``root``, or None."""
    out = subprocess.run(
        [
            "dpkg-query",
            f"--admindir={root}/var/lib/dpkg",
            "-W",
            "-f=${db:Status-Abbrev}|${Version}",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    status, _, version = out.stdout.partition("|")
    return version if status.startswith("ii") else None
