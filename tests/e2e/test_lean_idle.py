"""An idle agent becomes the lean poller (same PID, a fraction of the memory) and becomes the
full agent again when there is work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import spawn, wait_for
from tests.helpers import deploy, release, upload

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path / 'fleetwarden.db'}"


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_lean_module_imports_neither_pydantic_nor_cryptography():
    """fleetwarden.agent.lean rule 1."""
    code = "import sys, fleetwarden.agent.lean; print(sorted(m for m in ('pydantic', 'cryptography') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_idle_agent_goes_lean_and_back_for_work(server_process, tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (tmp_path / "agent.toml").write_text("collect_packages = false\ncollect_firmware = false\n")
    with server_process.api() as api:
        token = api.post("/api/v1/enrollment-tokens", json={"labels": {"lean": "yes"}}).json()[
            "token"
        ]
        proc = spawn(
            [
                "agent",
                "--server",
                server_process.url,
                "--enroll-token",
                token,
                "--data-dir",
                str(tmp_path / "agent"),
                "--root",
                str(root),
                "--poll-interval",
                "2",
                "--config",
                str(tmp_path / "agent.toml"),
            ]
        )
        try:
            pid = proc.popen.pid
            wait_for(
                lambda: "fleetwarden.agent.lean" in _cmdline(pid),
                timeout=60,
                what=f"lean mode\n{proc.output()}",
            )
            assert _rss_mb(pid) < 40
            art = upload(
                api, b"from lean\n", name="lean-conf", version="1", meta=["path=/etc/lean.conf"]
            )
            deploy(api, release(api, "lean", "1", [art["id"]])["id"], selector="lean=yes")
            wait_for(
                (root / "etc/lean.conf").exists,
                timeout=60,
                what=f"install\n{proc.output()}",
            )
            assert (root / "etc/lean.conf").read_text() == "from lean\n"
            wait_for(
                lambda: api.get("/api/v1/assignments").json()[0]["state"] == "succeeded",
                what="report",
            )
            wait_for(
                lambda: "fleetwarden.agent.lean" in _cmdline(pid), timeout=60, what="lean again"
            )
            assert proc.popen.pid == pid
            assert proc.popen.poll() is None
            assert any("resuming the full agent" in line for line in proc.lines)
        finally:
            proc.stop()
