"""Operator REST API v1 (``/api/v1``): request and response bodies."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fleetwarden.core.assignments import AssignmentState
from fleetwarden.core.fleet import DeviceState
from fleetwarden.protocol.device import HealthCheck, Inventory, LabelKey, Labels, LabelValue

__all__ = [
    "ArtifactOut",
    "ArtifactType",
    "AssignmentOut",
    "AuditOut",
    "DeploymentCreate",
    "DeploymentOut",
    "DeviceDetail",
    "DeviceOut",
    "EnrollmentTokenCreate",
    "EnrollmentTokenCreated",
    "ErrorBody",
    "FleetSummary",
    "InventoryOut",
    "LabelsPatch",
    "Page",
    "ReleaseCreate",
    "ReleaseOut",
    "Role",
    "TokenCreate",
    "TokenCreated",
    "TokenOut",
]

T = TypeVar("T")
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.+\-]+$")
]
Version = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.+~:\-]+$")
]


class _In(BaseModel):
    # Operator input is strict: a misspelt field is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, from_attributes=True)


class Role(enum.StrEnum):
    """Roles are ordered: each includes the rights of those before it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class ArtifactType(enum.StrEnum):
    DEB = "deb"
    FILE = "file"
    SCRIPT_MODULE = "script-module"
    IMAGE = "image"
    FIRMWARE = "firmware"
    SWU = "swu"  # a SWUpdate bundle, installed by the device's own swupdate
    RAUCB = "raucb"  # a RAUC bundle, installed by the device's own RAUC service


class ErrorDetail(_Out):
    code: str
    message: str


class ErrorBody(_Out):
    error: ErrorDetail


class Page(_Out, Generic[T]):
    items: list[T]
    total: int


class TokenCreate(_In):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    role: Role
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class TokenOut(_Out):
    id: int
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str


class EnrollmentTokenCreate(_In):
    uses: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    expires_in_hours: Annotated[int, Field(ge=1, le=24 * 365)] = 24
    labels: Labels = Field(default_factory=dict)
    note: Annotated[str, StringConstraints(max_length=256)] = ""


class EnrollmentTokenCreated(_Out):
    id: int
    token: str
    uses: int
    expires_at: datetime
    labels: dict[str, str]


class DeviceOut(_Out):
    id: str
    name: str
    state: DeviceState
    site: str
    zone: str
    hardware_model: str
    arch: str
    os_name: str
    os_version: str
    kernel: str
    agent_version: str
    installed_release: str
    labels: dict[str, str]
    enrolled_at: datetime
    last_seen_at: datetime | None
    cert_not_after: datetime | None


class AssignmentOut(_Out):
    id: int
    device_id: str
    deployment_id: int | None
    release_id: int
    release: str
    state: AssignmentState
    detail: str
    progress: int | None
    created_at: datetime
    updated_at: datetime
    #: Set when the device is sent a delta instead of the release's full image.
    delta_artifact_id: int | None = None


class InventoryOut(_Out):
    fingerprint: str
    collected_at: datetime
    inventory: Inventory


class DeviceDetail(DeviceOut):
    inventory: InventoryOut | None
    assignments: list[AssignmentOut]


class LabelsPatch(_In):
    set: dict[LabelKey, LabelValue] = Field(default_factory=dict)
    remove: Annotated[list[LabelKey], Field(max_length=64)] = Field(default_factory=list)


class ArtifactOut(_Out):
    id: int
    name: str
    version: str
    type: ArtifactType
    sha256: str
    size: int
    compatible_models: list[str]
    meta: dict[str, str]
    created_at: datetime


class DeltaCreate(_In):
    base_id: int


class ReleaseCreate(_In):
    name: Name
    version: Version
    artifacts: Annotated[list[int], Field(min_length=1, max_length=256)]
    description: Annotated[str, StringConstraints(max_length=4096)] = ""
    health_checks: Annotated[list[HealthCheck], Field(max_length=32)] = Field(default_factory=list)


class ReleaseOut(_Out):
    id: int
    name: str
    version: str
    description: str
    artifacts: list[ArtifactOut]
    health_checks: list[HealthCheck]
    created_at: datetime


class DeploymentCreate(_In):
    """Assign a release to devices chosen by selector and/or by id."""

    release_id: int
    selector: Annotated[str, StringConstraints(max_length=4096)] | None = None
    devices: Annotated[list[str], Field(max_length=10_000)] | None = None
    force: bool = False  # cancel a not-yet-installing assignment instead of skipping the device


class DeploymentOut(_Out):
    id: int
    release_id: int
    release: str
    selector: str | None
    created_at: datetime
    created_by: str
    assigned: int
    skipped: dict[str, str] = Field(default_factory=dict)


class AuditOut(_Out):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class FleetSummary(_Out):
    total: int
    states: dict[str, int]
    releases: dict[str, int]
    os_versions: dict[str, int]
    assignments: dict[str, int]


# -- device CA ----------------------------------------------------------------------------------
__all__ += ["CaOut", "CaStatus"]


class CaOut(_Out):
    key_id: str
    subject: str
    not_after: datetime
    #: "issuing" for the current CA; "previous" for one kept trusted after a rotation.
    role: str
    #: Previous CAs: trusted until this moment (the last certificate they issued expires).
    trusted_until: datetime | None = None


class CaStatus(_Out):
    cas: list[CaOut]
