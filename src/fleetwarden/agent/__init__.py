"""The device agent.

Public surface, used by ``fleetwarden agent`` and by the fleet simulator (which runs this very
state machine with a simulated installer and in-memory stores). Names load lazily (PEP 562),
so that the lean idle poller (``fleetwarden.agent.lean``) can live in this package without
paying for pydantic and cryptography.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetwarden.agent.client import DeviceClient
    from fleetwarden.agent.config import AgentConfig
    from fleetwarden.agent.health import CommandHealthChecker, HealthChecker
    from fleetwarden.agent.installers import FakeInstaller, Installer, default_installers
    from fleetwarden.agent.journal import Job, Step
    from fleetwarden.agent.loop import Agent, run_forever
    from fleetwarden.agent.main import build_agent, run
    from fleetwarden.agent.store import FileStore, MemoryStore

_WHERE = {
    "Agent": "loop",
    "run_forever": "loop",
    "AgentConfig": "config",
    "CommandHealthChecker": "health",
    "HealthChecker": "health",
    "DeviceClient": "client",
    "FakeInstaller": "installers",
    "Installer": "installers",
    "default_installers": "installers",
    "Job": "journal",
    "Step": "journal",
    "build_agent": "main",
    "run": "main",
    "FileStore": "store",
    "MemoryStore": "store",
}

__all__ = [
    "Agent",
    "AgentConfig",
    "CommandHealthChecker",
    "DeviceClient",
    "FakeInstaller",
    "FileStore",
    "HealthChecker",
    "Installer",
    "Job",
    "MemoryStore",
    "Step",
    "build_agent",
    "default_installers",
    "run",
    "run_forever",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fleetwarden.agent' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fleetwarden.agent.{module}"), name)
