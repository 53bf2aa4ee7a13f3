"""Create ./.venv with a working pip, even where Debian's python3-venv is not installed.

A fresh Debian or Ubuntu has python3 but not ``ensurepip`` (it lives in python3-venv), so
``python3 -m venv`` fails there. We then create the venv without pip and install pip from
its wheel on PyPI, which is the only network the project assumes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
import venv
from pathlib import Path

VENV = Path(sys.argv[1] if len(sys.argv) > 1 else ".venv")
INDEX = "https://pypi.org/pypi/pip/json"


def main() -> int:
    python = VENV / "bin" / "python"
    if (
        python.exists()
        and subprocess.call([python, "-m", "pip", "--version"], stdout=subprocess.DEVNULL) == 0
    ):
        return 0
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        return 0
    except (subprocess.CalledProcessError, OSError):
        pass
    venv.EnvBuilder(with_pip=False, clear=True).create(VENV)
    with urllib.request.urlopen(INDEX, timeout=60) as resp:
        release = json.load(resp)
    wheel = next(u for u in release["urls"] if u["filename"].endswith(".whl"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / wheel["filename"]
        with urllib.request.urlopen(wheel["url"], timeout=120) as resp:  # noqa: S310
            path.write_bytes(resp.read())
        # A pip wheel can run itself: python pip.whl/pip install pip.whl
        return subprocess.call([python, f"{path}/pip", "install", "--no-index", str(path)])


if __name__ == "__main__":
    raise SystemExit(main())
