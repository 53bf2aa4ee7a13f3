from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetwarden.agent import Agent, AgentConfig, CommandHealthChecker, DeviceClient, FileStore
from fleetwarden.agent.installers import default_installers
from fleetwarden.agent.inventory import SystemInventory
from fleetwarden.protocol.device import Inventory


@pytest.fixture
def device_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    return root


@pytest.fixture
def make_agent(api, tmp_path: Path, device_root: Path):
    """A real agent (journal on disk, real installers) talking to the in-process app."""

    def build(**overrides: Any) -> Agent:
        token = api.post("/api/v1/enrollment-tokens", json={"labels": {"lab": "true"}}).json()[
            "token"
        ]
        cfg = AgentConfig(
            server="http://testserver",
            data_dir=tmp_path / "agent",
            enroll_token=token,
            hostname="lab-1",
            root=device_root,
            poll_interval=1,
            hardware_model="gw-200",
            collect_firmware=False,
            site="berlin",
            **overrides,
        )

        def inventory(installed: str) -> Inventory:
            return SystemInventory(cfg, installed_release=installed).collect()

        http = api.__class__(
            api.app, base_url="http://testserver"
        )  # its own client: no admin header
        return Agent(
            cfg,
            client=DeviceClient(http),
            store=FileStore(cfg.data_dir / "state"),
            installers=default_installers(),
            inventory=inventory,
            health=CommandHealthChecker(),
        )

    return build


def drive(agent: Agent, *, steps: int = 50) -> None:
    """Run the agent until it waits for the next poll with nothing in progress."""
    for _ in range(steps):
        delay = agent.run_once()
        if delay > 0 and agent.journal.load() is None:
            return
    raise AssertionError("agent did not settle")
