"""Shared by the installer tests: an install context around one payload file, and a
self-signed signing certificate (for SWUpdate and RAUC bundles)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from fleetwarden.agent.installers import InstallContext, Payload
from fleetwarden.protocol.device import ArtifactRef


def install_context(
    workdir: Path,
    payload: Path,
    type_: str,
    *,
    meta: dict[str, str] | None = None,
    sha256: str | None = None,
) -> InstallContext:
    """An install context for one artifact ``os@2`` whose bytes are ``payload``."""
    data = payload.read_bytes() if payload.exists() else b""
    ref = ArtifactRef(
        id=1,
        name="os",
        version="2",
        type=type_,
        url="/x",
        size=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        meta=meta or {},
    )
    return InstallContext(
        assignment_id=1,
        release="os@2",
        payloads=[Payload(ref, payload)],
        workdir=workdir,
        state_dir=workdir / "state",
        root=workdir,
    )


def self_signed(d: Path, name: str, days: int = 90) -> tuple[Path, Path]:
    """(key, certificate) of a fresh self-signed RSA signer called ``name``."""
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days),
         "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert
