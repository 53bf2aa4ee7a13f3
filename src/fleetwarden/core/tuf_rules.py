"""What the two TUF repositories sign, and when a device may act on it (Uptane-style).

Two repositories, each standard TUF (python-tuf verifies them; this module never sees a
signature, only what verified metadata said):

- **image**: every released artifact, at ``artifacts/<id>/<name>-<version>``, with its counter
  within its name and whether it was withdrawn.
- **director**: what each device should install now, at ``<device id>/<image path>``, carrying
  the assignment id and the same counter.

Rules a device applies before it downloads anything (``check_artifact``):
  1. The director must name this device's path for the artifact (an artifact assigned to
     another device, or not assigned at all, is refused).
  2. The director entry must name the assignment the device is working on (no replay of an
     earlier assignment's entry).
  3. The image repository must list the artifact (the director alone cannot make a device
     install bytes that were never released).
  4. Director and image must agree on length and every hash they both give, and on the counter
     (Uptane "SHALL match").
  5. An artifact whose image entry compatible models do not include the device's model is
     refused (empty list = any model).
  6. A counter lower than the one installed for the same name is a downgrade: refused unless
     the image repository marked the installed artifact withdrawn. A compromised director
     cannot roll a device back; a rollback needs the image repository's signature.
Re-signing (``resign_due``): a role is re-signed once less than ``share`` of its lifetime is
left, so a background job keeps every role valid without re-signing on every run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fleetwarden.errors import TrustError

__all__ = [
    "Entry",
    "Installed",
    "TrustedArtifact",
    "check_artifact",
    "director_path",
    "hash_bin",
    "image_path",
    "resign_due",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+~-]")


def _component(value: str) -> str:
    """One path component a TUF client can store as a file name: no ``/``, no ``..``."""
    cleaned = _UNSAFE.sub("_", value) or "_"
    return "_" + cleaned if cleaned.startswith(".") else cleaned


def image_path(artifact_id: int, name: str, version: str) -> str:
    """The image repository's target path of an artifact (stable, unique by id)."""
    return f"artifacts/{artifact_id}/{_component(name)}-{_component(version)}"


def director_path(device_id: str, image: str) -> str:
    """The director's target path for one device and one image target."""
    return f"{_component(device_id)}/{image}"


def hash_bin(path: str, prefix_len: int) -> str:
    """The hashed-bin prefix of a target path (TUF spec ``path_hash_prefixes``)."""
    return hashlib.sha256(path.encode()).hexdigest()[:prefix_len]


def resign_due(expires: datetime, now: datetime, lifetime: timedelta, share: float) -> bool:
    """True once less than ``share`` of ``lifetime`` is left before ``expires``."""
    return expires - now < lifetime * share


@dataclass(frozen=True, slots=True)
class Entry:
    """A verified target entry: length, hashes and custom data as the metadata said."""

    length: int
    hashes: Mapping[str, str]
    custom: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Installed:
    """What a device installed last under an artifact name (from its own records)."""

    counter: int
    withdrawn: bool = False  # the image repository now marks that artifact withdrawn


@dataclass(frozen=True, slots=True)
class TrustedArtifact:
    path: str
    length: int
    sha256: str
    counter: int


def _int(custom: Mapping[str, Any], key: str, who: str) -> int:
    value = custom.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TrustError(f"{who} entry has no valid {key}")
    return value


def check_artifact(  # noqa: C901 - one rule per branch, all plain data
    *,
    name: str,
    path: str,
    director: Entry | None,
    image: Entry | None,
    assignment_id: int,
    model: str,
    installed: Installed | None,
) -> TrustedArtifact:
    """Apply rules 1-6 to one artifact of an assignment.

    Raises:
        TrustError: naming the rule that refused it.
    """
    if director is None:
        raise TrustError(f"{path}: the director has not assigned this artifact to this device")
    if director.custom.get("assignment_id") != assignment_id:
        raise TrustError(
            f"{path}: the director's entry is for assignment "
            f"{director.custom.get('assignment_id')!r}, not {assignment_id}"
        )
    if image is None:
        raise TrustError(f"{path}: not a released artifact in the image repository")
    if director.length != image.length:
        raise TrustError(
            f"{path}: director and image repository disagree on the length "
            f"({director.length} != {image.length})"
        )
    common = set(director.hashes) & set(image.hashes)
    if "sha256" not in common:
        raise TrustError(f"{path}: director and image repository must both give a sha256")
    for algo in sorted(common):
        if director.hashes[algo] != image.hashes[algo]:
            raise TrustError(f"{path}: director and image repository disagree on the {algo}")
    counter = _int(image.custom, "release_counter", "image")
    if _int(director.custom, "release_counter", "director") != counter:
        raise TrustError(f"{path}: director and image repository disagree on the release counter")
    models = image.custom.get("compatible_models") or []
    if models and model not in models:
        raise TrustError(f"{path}: built for {', '.join(map(str, models))}, not {model!r}")
    if installed is not None and counter < installed.counter and not installed.withdrawn:
        raise TrustError(
            f"{path}: downgrade of {name} from release counter {installed.counter} to {counter} "
            "without the image repository withdrawing the installed release"
        )
    return TrustedArtifact(path, image.length, image.hashes["sha256"], counter)
