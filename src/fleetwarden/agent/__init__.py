"""The device agent.

Public surface, used by ``fleetwarden agent`` and by the fleet simulator (which runs this very
state machine with a simulated installer and in-memory stores).
"""

from fleetwarden.agent.client import DeviceClient
from fleetwarden.agent.config import AgentConfig
from fleetwarden.agent.health import CommandHealthChecker, HealthChecker
from fleetwarden.agent.installers import FakeInstaller, Installer, default_installers
from fleetwarden.agent.journal import Job, Step
from fleetwarden.agent.loop import Agent, run_forever
from fleetwarden.agent.main import build_agent, run
from fleetwarden.agent.store import FileStore, MemoryStore

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
