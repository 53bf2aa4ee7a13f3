"""Applying an image delta on the device (format: ``core.delta``).

``check_delta`` refuses a delta whose base is not the image in the running slot, and
``apply_delta`` reconstructs the image twice: once only to hash it (a corrupted delta or a
wrong base is refused before the target slot is touched), then into the slot, which hashes
again while writing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import zstandard

from fleetwarden.core.delta import DeltaSpec, decompressor
from fleetwarden.errors import InstallError

__all__ = ["DeltaSpec", "apply_delta", "check_delta"]

_CHUNK = 1 << 20

Reader = Callable[[int], bytes]


def _read_base(spec: DeltaSpec, base_slot: Path) -> bytes:
    try:
        with base_slot.open("rb") as f:
            base = f.read(spec.base_size)
    except OSError as e:
        raise InstallError(f"cannot read the running slot {base_slot}: {e}") from e
    if len(base) != spec.base_size or hashlib.sha256(base).hexdigest() != spec.base_sha256:
        raise InstallError(
            f"delta refused: the running slot {base_slot} is not its base "
            f"(sha256 {spec.base_sha256[:12]}…); the full image is needed"
        )
    return base


def check_delta(spec: DeltaSpec, delta: Path, base_slot: Path) -> None:
    """Raises ``InstallError`` unless the running slot is the base and the delta rebuilds the
    promised image."""
    base = _read_base(spec, base_slot)
    _rebuild(spec, delta, base, None)


def apply_delta(
    spec: DeltaSpec, delta: Path, base_slot: Path, sink: Callable[[Reader], int]
) -> int:
    """Rebuild the image and hand a reader of it to ``sink`` (which writes the slot)."""
    base = _read_base(spec, base_slot)
    _rebuild(spec, delta, base, None)
    return _rebuild(spec, delta, base, sink)


def _rebuild(
    spec: DeltaSpec, delta: Path, base: bytes, sink: Callable[[Reader], int] | None
) -> int:
    h = hashlib.sha256()
    size = 0
    try:
        with delta.open("rb") as f, decompressor(base, spec).stream_reader(f) as reader:

            def read(n: int) -> bytes:
                nonlocal size
                chunk = reader.read(n)
                size += len(chunk)
                if size > spec.image_size:
                    raise InstallError(f"delta rebuilds more than {spec.image_size} bytes")
                h.update(chunk)
                return chunk

            if sink is None:
                while read(_CHUNK):
                    pass
            else:
                sink(read)
    except zstandard.ZstdError as e:
        raise InstallError(f"delta refused: it does not decompress ({e})") from e
    if size != spec.image_size or h.hexdigest() != spec.image_sha256:
        raise InstallError(
            f"delta refused: it rebuilds {size} bytes hashing to {h.hexdigest()[:12]}…, "
            f"not the image {spec.image_sha256[:12]}… of {spec.image_size} bytes"
        )
    return size
