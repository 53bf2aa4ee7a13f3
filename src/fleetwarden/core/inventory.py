"""Inventory fingerprints and the attributes a selector can see.

Rules:
  1. ``fingerprint`` depends only on content, not on key order: the agent and the server
     compute it independently and compare, so an unchanged inventory is never re-sent.
  2. ``selector_attributes`` exposes labels as given, plus a fixed set of well-known facts
     (``id``, ``name``, ``site``, ``zone``, ``model``, ``os``, ``os_version``, ``kernel``,
     ``arch``). A label wins over a fact of the same name, because labels are what an
     operator set on purpose.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["fingerprint", "selector_attributes"]


def fingerprint(document: Mapping[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def selector_attributes(
    *,
    device_id: str,
    name: str,
    labels: Mapping[str, str],
    facts: Mapping[str, str | None],
) -> dict[str, str]:
    attrs = {k: v for k, v in facts.items() if v is not None}
    attrs["id"] = device_id
    attrs["name"] = name
    attrs.update(labels)
    return attrs
