"""Native device API v1: what agents and the server say to each other."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)

from fleetwarden.core.assignments import AssignmentState

__all__ = [
    "Action",
    "ArtifactRef",
    "ChallengeResponse",
    "EnrollRequest",
    "EnrollResponse",
    "FirmwareComponent",
    "HealthCheck",
    "Inventory",
    "InventoryAck",
    "Package",
    "PollResponse",
    "SessionRequest",
    "SessionResponse",
    "StatusAck",
    "StatusReport",
]

Short = Annotated[str, StringConstraints(max_length=256)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
Pem = Annotated[str, StringConstraints(min_length=1, max_length=16384)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,62}$")]
LabelValue = Annotated[str, StringConstraints(max_length=128)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EnrollRequest(_Model):
    enrollment_token: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    csr: Pem
    hostname: Name


class EnrollResponse(_Model):
    device_id: str
    certificate: str
    ca_certificates: list[str]
    poll_interval_seconds: int
    #: The TUF roots the device pins: ``{"image": root.json, "director": root.json}``.
    tuf_roots: dict[str, str] = Field(default_factory=dict)


class ChallengeResponse(_Model):
    challenge: str
    expires_in_seconds: int


class SessionRequest(_Model):
    device_id: Name
    certificate: Pem
    challenge: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    signature: Annotated[str, StringConstraints(min_length=1, max_length=1024)]  # base64 DER


class SessionResponse(_Model):
    token: str
    expires_at: datetime


class ArtifactRef(_Model):
    id: int
    name: str
    version: str
    type: str
    sha256: Sha256
    size: int
    url: str
    meta: dict[str, str] = Field(default_factory=dict)


class HealthCheck(_Model):
    """One check the agent runs after installing, exactly one of: a ``command`` (exit status
    0 is healthy), a ``systemd_unit`` that must be active, or an ``http`` URL that must answer
    with a 2xx status."""

    command: (
        Annotated[
            list[Annotated[str, StringConstraints(max_length=4096)]],
            Field(min_length=1, max_length=64),
        ]
        | None
    ) = None
    systemd_unit: (
        Annotated[str, StringConstraints(max_length=256, pattern=r"^[A-Za-z0-9@._:\-]+$")] | None
    ) = None
    http: Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://\S+$")] | None = (
        None
    )
    timeout_seconds: Annotated[int, Field(ge=1, le=3600)] = 60

    @model_validator(mode="after")
    def _exactly_one(self) -> HealthCheck:
        kinds = [k for k in ("command", "systemd_unit", "http") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a health check needs exactly one of command, systemd_unit, http"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        return self

    @model_serializer(mode="wrap")
    def _only_its_kind(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Serialize only the kind that is set (a command check reads as before)."""
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}

    def describe(self) -> str:
        if self.command is not None:
            return " ".join(self.command)
        if self.systemd_unit is not None:
            return f"systemd unit {self.systemd_unit}"
        return f"GET {self.http}"


class Action(_Model):
    assignment_id: int
    state: AssignmentState
    release_name: str
    release_version: str
    artifacts: list[ArtifactRef]
    health_checks: list[HealthCheck] = Field(default_factory=list)
    #: Rollout hooks: ``pre_install`` must succeed before installing (e.g. drain the node),
    #: ``post_install`` after the health checks (undrain); ``post_install`` also runs, best
    #: effort, after a rollback or a failed pre-install hook.
    pre_install: list[HealthCheck] = Field(default_factory=list)
    post_install: list[HealthCheck] = Field(default_factory=list)
    #: Set for emergency (zero-day) rollouts, so the device can log it prominently.
    emergency: bool = False


class PollResponse(_Model):
    device_id: str
    poll_interval_seconds: int
    action: Action | None = None
    inventory_fingerprint: str | None = None


class StatusReport(_Model):
    state: AssignmentState
    detail: Annotated[str, StringConstraints(max_length=4096)] = ""
    progress: Annotated[int, Field(ge=0, le=100)] | None = None


class StatusAck(_Model):
    state: AssignmentState
    changed: bool


class Package(_Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    version: Short
    arch: Annotated[str, StringConstraints(max_length=32)] = ""


class FirmwareComponent(_Model):
    name: Short
    version: Short
    vendor: Short = ""
    device_id: Short = ""
    guids: Annotated[list[Short], Field(max_length=64)] = Field(default_factory=list)
    plugin: Short = ""


class SlotReport(_Model):
    """One A/B root slot as the device's boot environment sees it."""

    name: Short
    state: Literal["good", "trying", "bad"]
    attempts_left: Annotated[int, Field(ge=0, le=1000)] = 0
    booted: bool = False
    primary: bool = False


class Inventory(_Model):
    hostname: Name
    os_name: Short = ""
    os_version: Short = ""
    kernel: Short = ""
    arch: Short = ""
    hardware_model: Short = ""
    agent_version: Short = ""
    site: Short = ""
    zone: Short = ""
    labels: Labels = Field(default_factory=dict)
    installed_release: Short = ""
    packages: Annotated[list[Package], Field(max_length=100_000)] = Field(default_factory=list)
    firmware: Annotated[list[FirmwareComponent], Field(max_length=4096)] = Field(
        default_factory=list
    )
    #: A/B devices: each root slot's state (empty for devices without slots).
    slots: Annotated[list[SlotReport], Field(max_length=8)] = Field(default_factory=list)


class InventoryAck(_Model):
    fingerprint: str
    changed: bool


# -- certificate renewal (EST simplereenroll semantics, RFC 7030 §4.2.2) --------------------------
__all__ += ["ReenrollRequest", "ReenrollResponse"]


class ReenrollRequest(_Model):
    """A new CSR, sent over a session opened with the device's current certificate.

    The key may be the same or a new one; the CSR's subject and extensions are ignored (the
    server names the device)."""

    csr: Pem


class ReenrollResponse(_Model):
    certificate: str
    #: Every CA the server trusts for device certificates, the issuing one first.
    ca_certificates: list[str]
    not_after: datetime
