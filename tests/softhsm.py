"""Fresh SoftHSM2 tokens for tests, each in its own temporary directory.

SoftHSM2 reads ``SOFTHSM2_CONF`` (and scans its token directory) in C_Initialize, so a token
made after the module was loaded in this process is invisible until the module is initialised
again; ``softhsm_token`` does that. The tests therefore never touch ``/var/lib/softhsm``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pkcs11
import pytest

from tests.conftest import require_tool

MODULE = Path(os.environ.get("PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so"))


@dataclass(frozen=True)
class SoftHsmToken:
    """An initialised token: its label, PINs, module and configuration file."""

    label: str
    pin: str
    so_pin: str
    module: Path
    conf: Path

    def uri(self, key_label: str, *, pin: str | None = None) -> str:
        """A ``pkcs11:`` URI for ``key_label`` in this token, with ``pin`` (default: the PIN)."""
        return (
            f"pkcs11:token={quote(self.label, safe='')};object={quote(key_label, safe='')}"
            f"?module-path={quote(str(self.module), safe='/')}"
            f"&pin-value={quote(self.pin if pin is None else pin, safe='')}"
        )


def softhsm_token(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    label: str = "fleet-test",
    pin: str = "4711-user",
    so_pin: str = "12345678",
) -> SoftHsmToken:
    """Create a token in ``tmp_path/softhsm`` and point this process's SoftHSM2 at it.

    Skips (laptop) or fails (CI, ``FLEETWARDEN_REQUIRE_ALL=1``) without softhsm2-util or the
    module. ``SOFTHSM2_CONF`` goes to softhsm2-util through its environment and to this process
    through ``monkeypatch``, so it is undone after the test.
    """
    require_tool("softhsm2-util", str(MODULE))
    home = tmp_path / "softhsm"
    (home / "tokens").mkdir(parents=True)
    conf = home / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {home / 'tokens'}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    done = subprocess.run(
        [
            *("softhsm2-util", "--init-token", "--free"),
            *("--label", label, "--so-pin", so_pin, "--pin", pin),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"softhsm2-util --init-token failed: {done.stderr.strip()}")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    # Initialise the module again (if this process loaded it) so it reads the new
    # configuration and sees the new token; sessions from earlier tests become invalid.
    pkcs11.lib(str(MODULE)).reinitialize()
    return SoftHsmToken(label, pin, so_pin, MODULE, conf)
