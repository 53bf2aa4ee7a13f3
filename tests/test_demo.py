"""`make run` starts `fleetwarden demo`: server, simulated fleet, sample deployment, the
dashboard URL and an admin token printed, and a clean stop on Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow


def test_demo_runs_and_stops_cleanly(tmp_path):
    port = free_port()
    log = tmp_path / "demo.out"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleetwarden",
                "demo",
                "--port",
                str(port),
                "--devices",
                "6",
                "--data-dir",
                str(tmp_path / "data"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        banner = wait_for(
            lambda: re.search(r"Admin API token:\s+(fwt_\S+)", log.read_text()),
            timeout=60,
            what="the demo banner",
        )
        assert f"http://127.0.0.1:{port}/ui/" in log.read_text()
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {banner.group(1)}"},
        )
        with api:
            wait_for(
                lambda: api.get("/api/v1/devices").json()["total"] == 6, what="simulated devices"
            )
            wait_for(
                lambda: any(
                    a["state"] == "succeeded" for a in api.get("/api/v1/assignments").json()
                ),
                timeout=90,
                what="sample deployment progress",
            )
    finally:
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        code = proc.wait(30)
    assert code == 0, log.read_text()[-2000:]
    assert time.monotonic() - start < 25
    assert "stopped." in log.read_text()
