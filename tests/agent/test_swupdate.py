"""The SWUpdate installer against Debian's real swupdate (built for signed images): a CMS
signed .swu with the rawfile handler is installed; a wrongly signed or tampered bundle is
refused by swupdate's own check before anything is written."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from fleetwarden.agent.installers import InstallContext
from fleetwarden.agent.installers.swupdate import SwupdateInstaller
from fleetwarden.errors import InstallError
from tests.agent.bundles import install_context, self_signed
from tests.conftest import require_tool

#: The board and revision a bundle's hardware-compatibility must name (``swupdate -H``).
HW = ["-H", "gw-200:1.0"]


def _cpio_newc(members: list[tuple[str, bytes]]) -> bytes:
    """A ``newc`` cpio archive, the container format of a .swu (sw-description first)."""
    out = bytearray()

    def pad(n: int) -> bytes:
        return b"\0" * ((4 - n % 4) % 4)

    for ino, (name, data) in enumerate([*members, ("TRAILER!!!", b"")], start=1):
        raw = name.encode() + b"\0"
        mode = 0o100644 if name != "TRAILER!!!" else 0
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        header = b"070701" + b"".join(f"{f:08X}".encode() for f in fields)
        out += header + raw + pad(len(header) + len(raw)) + data + pad(len(data))
    return bytes(out)


def _swu(tmp: Path, target: Path, image: bytes, key: Path, cert: Path) -> Path:
    desc = (
        "software =\n{\n"
        '  version = "2.0";\n'
        '  hardware-compatibility: [ "1.0" ];\n'
        "  files: (\n    {\n"
        '      filename = "rootfs.img";\n'
        f'      path = "{target}";\n'
        f'      sha256 = "{hashlib.sha256(image).hexdigest()}";\n'
        "    }\n  );\n}\n"
    ).encode()
    (tmp / "sw-description").write_bytes(desc)
    subprocess.run(
        [
            "openssl", "cms", "-sign", "-in", str(tmp / "sw-description"),
            "-out", str(tmp / "sw-description.sig"), "-signer", str(cert),
            "-inkey", str(key), "-outform", "DER", "-nosmimecap", "-binary",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    swu = tmp / "update.swu"
    swu.write_bytes(
        _cpio_newc(
            [
                ("sw-description", desc),
                ("sw-description.sig", (tmp / "sw-description.sig").read_bytes()),
                ("rootfs.img", image),
            ]
        )
    )
    return swu


def _ctx(tmp: Path, swu: Path) -> InstallContext:
    return install_context(tmp, swu, "swu")


@pytest.fixture
def signer(tmp_path):
    require_tool("swupdate", "openssl")
    return self_signed(tmp_path, "vendor")


def test_a_signed_bundle_is_installed_by_swupdate(tmp_path, signer):
    key, cert = signer
    target = tmp_path / "slot-B.img"
    image = b"root filesystem v2\n" * 1000
    swu = _swu(tmp_path, target, image, key, cert)
    installer = SwupdateInstaller(cert, extra_args=HW, reboot=True)
    ctx = _ctx(tmp_path, swu)
    installer.preflight(ctx)
    assert not target.exists()  # -c checks, installs nothing
    assert installer.install(ctx, {}).needs_reboot
    assert target.read_bytes() == image


def test_a_bundle_signed_by_someone_else_is_refused_before_writing(tmp_path, signer):
    _, cert = signer
    other_key, other_cert = self_signed(tmp_path, "intruder")
    target = tmp_path / "slot-B.img"
    swu = _swu(tmp_path, target, b"evil", other_key, other_cert)
    installer = SwupdateInstaller(cert, extra_args=HW)
    with pytest.raises(InstallError, match="swupdate check of os failed"):
        installer.preflight(_ctx(tmp_path, swu))
    assert not target.exists()


def test_a_tampered_image_is_refused(tmp_path, signer):
    key, cert = signer
    target = tmp_path / "slot-B.img"
    swu = _swu(tmp_path, target, b"good image" * 100, key, cert)
    data = bytearray(swu.read_bytes())
    i = data.rfind(b"good image")
    data[i] = ord("G")
    swu.write_bytes(bytes(data))
    with pytest.raises(InstallError, match="swupdate"):
        SwupdateInstaller(cert, extra_args=HW).install(_ctx(tmp_path, swu), {})
    assert not target.exists() or b"Good" not in target.read_bytes()


def test_a_missing_key_is_named(tmp_path):
    (tmp_path / "x.swu").write_bytes(b"not a bundle")
    installer = SwupdateInstaller(tmp_path / "nope.pem")
    with pytest.raises(InstallError, match=r"public key .*nope.pem is missing"):
        installer.preflight(_ctx(tmp_path, tmp_path / "x.swu"))
