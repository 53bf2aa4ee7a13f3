"""Build a real agent from its configuration and run it (``fleetwarden agent``)."""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import sys
import threading

import httpx

import fleetwarden
from fleetwarden.agent.boot import make_bootloader
from fleetwarden.agent.client import DeviceClient
from fleetwarden.agent.config import AgentConfig
from fleetwarden.agent.health import CommandHealthChecker
from fleetwarden.agent.installers import Installer, default_installers
from fleetwarden.agent.installers.image import ImageInstaller
from fleetwarden.agent.installers.rauc import RaucInstaller
from fleetwarden.agent.installers.swupdate import SwupdateInstaller
from fleetwarden.agent.inventory import SystemInventory
from fleetwarden.agent.lean import HANDOFF
from fleetwarden.agent.loop import Agent
from fleetwarden.agent.store import FileStore
from fleetwarden.errors import ConfigError
from fleetwarden.protocol.device import Inventory

__all__ = ["build_agent", "run"]


def build_agent(config: AgentConfig, http: httpx.Client | None = None) -> Agent:
    if http is None:
        verify: ssl.SSLContext | bool = True
        if config.server_ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(config.server_ca_file))
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"cannot load server_ca_file {config.server_ca_file}: {e}") from e
        http = httpx.Client(
            base_url=config.server,
            verify=verify,
            timeout=httpx.Timeout(30.0, connect=10.0),
            headers={"User-Agent": f"fleetwarden-agent/{fleetwarden.__version__}"},
        )
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def inventory(installed_release: str) -> Inventory:
        return SystemInventory(config, installed_release=installed_release).collect()

    return Agent(
        config,
        client=DeviceClient(http),
        store=FileStore(config.data_dir / "state"),
        installers=installers_for(config),
        inventory=inventory,
        health=CommandHealthChecker(),
    )


def installers_for(config: AgentConfig) -> dict[str, Installer]:
    """The stock installers, plus the A/B image installer when the device has slots."""
    installers = default_installers()
    if config.ab is not None:
        installers["image"] = ImageInstaller(
            make_bootloader(config.ab, config.data_dir),
            config.ab.slots,
            attempts=config.ab.attempts,
            rate_limit=config.ab.write_rate_limit,
        )
    if config.swupdate is not None:
        installers["swu"] = SwupdateInstaller(
            config.swupdate.public_key,
            extra_args=config.swupdate.extra_args,
            reboot=config.swupdate.reboot,
        )
    if config.rauc is not None:
        installers["raucb"] = RaucInstaller(conf=config.rauc.conf)
    return installers


def run(config: AgentConfig, argv: list[str] | None = None) -> None:
    """Run until SIGTERM/SIGINT; finishes the step in progress before stopping.

    With ``argv`` (the command line that started this agent) and ``lean_idle``, an idle agent
    turns into the lean poller by ``exec`` and back (fleetwarden.agent.lean).
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise
    agent = build_agent(config)
    store = config.data_dir / "state"
    (store / HANDOFF).unlink(missing_ok=True)  # a stale hand-off holds an old session token
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        delay = agent.run_once()
        handoff = agent.idle_handoff(delay, argv) if config.lean_idle and argv is not None else None
        if handoff is not None and argv is not None:
            handoff["user_agent"] = f"fleetwarden-agent/{fleetwarden.__version__}"
            FileStore(store).write(HANDOFF, json.dumps(handoff).encode())
            agent.client.http.close()
            os.execv(
                sys.executable, [sys.executable, "-m", "fleetwarden.agent.lean", str(store), *argv]
            )
        if delay > 0:
            stop.wait(delay)
