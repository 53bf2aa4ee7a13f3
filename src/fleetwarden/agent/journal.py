"""The agent's state journal: what it is doing, written atomically before and after every step.

A job is one assignment in progress; there is at most one. With a ``FileStore`` every save is
a temp file + fsync + rename, so a power cut leaves either the previous or the new record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from fleetwarden.agent.store import Store
from fleetwarden.core.job import Step
from fleetwarden.protocol.device import Action

__all__ = ["Job", "Journal", "Step"]


@dataclass
class Job:
    action: dict[str, Any]
    step: Step = Step.RECEIVED
    #: Last state the server acknowledged for this assignment.
    reported: str = "pending"
    detail: str = ""
    needs_reboot: bool = False
    download_attempts: int = 0
    reboot_requested: bool = False
    #: Wall-clock time (epoch seconds) the install's reboot was requested: the deadline for
    #: reaching the server again runs from here.
    rebooted_at: float | None = None
    #: A rollback asked for a reboot (A/B: back to the old slot) and it was requested.
    rollback_reboot_requested: bool = False
    #: Installer rollback snapshots, by artifact type.
    snapshots: dict[str, Any] = field(default_factory=dict)
    #: What the TUF repositories verified for each artifact (path, length, sha256, counter);
    #: empty until the assignment was verified.
    trusted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def assignment(self) -> Action:
        return Action.model_validate(self.action)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Job:
        raw = json.loads(data)
        raw["step"] = Step(raw["step"])
        return cls(**raw)


class Journal:
    """The one job in progress, kept in the agent's store under ``journal.json``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def load(self) -> Job | None:
        data = self.store.read("journal.json")
        return None if data is None else Job.from_json(data)

    def save(self, job: Job) -> None:
        self.store.write("journal.json", job.to_json())

    def clear(self) -> None:
        self.store.delete("journal.json")
