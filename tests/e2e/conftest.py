"""Real processes on 127.0.0.1: ``fleetwarden server`` and ``fleetwarden agent``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

ADMIN = "fwt_e2e-admin-token-0123456789abcdefghijklmnop"


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 60,
    interval: float = 0.2,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        def pump() -> None:
            stream = self.popen.stderr
            assert stream is not None
            with stream:
                for line in stream:
                    self.lines.append(line.rstrip("\n"))

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()

    def output(self) -> str:
        return "\n".join(self.lines[-400:])

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self._pump.join(5)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._pump.join(5)


def spawn(args: list[str], env: dict[str, str] | None = None) -> Proc:
    return Proc(
        subprocess.Popen(
            [sys.executable, "-m", "fleetwarden", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | (env or {}),
        )
    )


@dataclass
class ServerProc:
    url: str
    proc: Proc

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        )


@pytest.fixture
def server_process(tmp_path: Path, database_url: str) -> Iterator[ServerProc]:
    port = free_port()
    proc = spawn(
        ["server", "--data-dir", str(tmp_path / "server"), "--port", str(port)],
        env={
            "FLEETWARDEN_DATABASE_URL": database_url,
            "FLEETWARDEN_BOOTSTRAP_ADMIN_TOKEN": ADMIN,
            "FLEETWARDEN_POLL_INTERVAL_SECONDS": "1",
            "FLEETWARDEN_PRESENCE_FLUSH_SECONDS": "1",
            "FLEETWARDEN_LOG_FORMAT": "text",
        },
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"server exited:\n{proc.output()}")
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=60, what="server /readyz")
    try:
        yield ServerProc(url, proc)
    finally:
        proc.stop()


def start_agent(
    server: ServerProc,
    data_dir: Path,
    root: Path,
    enroll_token: str | None = None,
    hold_at: str | None = None,
) -> Proc:
    args = [
        "agent",
        "--server",
        server.url,
        "--data-dir",
        str(data_dir),
        "--root",
        str(root),
        "--poll-interval",
        "0.3",
    ]
    if enroll_token:
        args += ["--enroll-token", enroll_token]
    env = (
        {"FLEETWARDEN_AGENT_HOLD_AT_STEP": hold_at}
        if hold_at
        else {"FLEETWARDEN_AGENT_HOLD_AT_STEP": ""}
    )
    return spawn(args, env)
