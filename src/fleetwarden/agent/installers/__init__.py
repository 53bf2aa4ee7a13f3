"""Installers by artifact type: an explicit registry, chosen by the agent's composition root."""

from __future__ import annotations

from fleetwarden.agent.installers.base import InstallContext, Installer, InstallResult, Payload
from fleetwarden.agent.installers.deb import DebInstaller
from fleetwarden.agent.installers.fake import FakeInstaller
from fleetwarden.agent.installers.file import FileInstaller
from fleetwarden.agent.installers.script_module import ScriptModuleInstaller

__all__ = [
    "DebInstaller",
    "FakeInstaller",
    "FileInstaller",
    "InstallContext",
    "InstallResult",
    "Installer",
    "Payload",
    "ScriptModuleInstaller",
    "default_installers",
]


def default_installers() -> dict[str, Installer]:
    return {i.type: i for i in (FileInstaller(), DebInstaller(), ScriptModuleInstaller())}
