"""Binary deltas between OS images: zstd with the old image as a raw-content dictionary (the
library form of ``zstd --patch-from``), and the metadata a delta artifact carries.

Why zstd and not bsdiff: on two consecutive Debian trees (bench/delta.py) bsdiff's patch is
smaller, but it needs about 17 times the input in memory and minutes of CPU per image pair, while zstd
stays within a few times the input and streams on the device; docs/ab-updates.md has the
figures. The delta only ever travels with the full image's sha256, which the device checks
after reconstruction and before writing a byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import zstandard

from fleetwarden.errors import InputError

__all__ = [
    "DeltaSpec",
    "choose_delta",
    "decompressor",
    "delta_of",
    "make_delta",
    "window_log",
    "worth_shipping",
]

#: A delta is only worth shipping below this share of the full image.
MAX_SHARE = 0.5

_MIN_WINDOW_LOG = 10
_MAX_WINDOW_LOG = 31
_MIN_CHAIN_LOG = 16
_MAX_CHAIN_LOG = 27


def window_log(base_size: int, image_size: int) -> int:
    """The smallest window that lets every byte of the new image refer back to any byte of
    the base (base and image must both fit in the window)."""
    need = max(1, base_size + image_size)
    return max(_MIN_WINDOW_LOG, min(_MAX_WINDOW_LOG, need.bit_length()))


def make_delta(base: bytes, image: bytes, *, level: int = 19) -> bytes:
    """A delta that turns ``base`` into ``image``."""
    wlog = window_log(len(base), len(image))
    # Size the match finder's tables to the base, as ``zstd --patch-from`` does: level 19's
    # defaults index too little of a 100 MB base to find its matches (a 72 % patch instead
    # of 12 % on bench/delta.py's Debian set). Capped so a server builds one at < 3 GB.
    chain = max(_MIN_CHAIN_LOG, min(_MAX_CHAIN_LOG, len(base).bit_length() - 1))
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        window_log=wlog,
        enable_ldm=True,
        chain_log=chain,
        hash_log=chain - 1,
        source_size=len(image),
        threads=0,
    )
    cdict = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdCompressor(dict_data=cdict, compression_params=params).compress(image)


def decompressor(base: bytes, spec: DeltaSpec) -> zstandard.ZstdDecompressor:
    ddict = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdDecompressor(
        dict_data=ddict, max_window_size=1 << window_log(spec.base_size, spec.image_size)
    )


@dataclass(frozen=True, slots=True)
class DeltaSpec:
    """What a delta artifact's ``meta`` says: which image it starts from and which it makes."""

    base_sha256: str
    base_size: int
    image_sha256: str
    image_size: int

    def to_meta(self) -> dict[str, str]:
        return {
            "delta_base": self.base_sha256,
            "base_size": str(self.base_size),
            "image_sha256": self.image_sha256,
            "image_size": str(self.image_size),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> DeltaSpec | None:
        """None for a full image.

        Raises:
            InputError: a delta whose metadata is incomplete or malformed (names the field).
        """
        if "delta_base" not in meta:
            return None
        try:
            spec = cls(
                base_sha256=_hex(meta["delta_base"], "delta_base"),
                base_size=int(meta["base_size"]),
                image_sha256=_hex(meta["image_sha256"], "image_sha256"),
                image_size=int(meta["image_size"]),
            )
        except KeyError as e:
            raise InputError(f"delta metadata lacks {e.args[0]}") from e
        except ValueError as e:
            raise InputError(f"delta metadata: {e}") from e
        if spec.base_size <= 0 or spec.image_size <= 0:
            raise InputError("delta metadata: sizes must be positive")
        return spec


def _hex(value: Any, field: str) -> str:
    s = str(value)
    if len(s) != 64 or any(c not in "0123456789abcdef" for c in s):
        raise ValueError(f"{field} is not a lowercase sha256")
    return s


def delta_of(meta: Mapping[str, Any]) -> int | None:
    """The id of the image artifact a delta artifact rebuilds (its ``delta_of``), or None
    for an artifact that is not a delta."""
    raw = str(meta.get("delta_of", ""))
    return int(raw) if raw.isdigit() else None


def worth_shipping(delta_size: int, image_size: int) -> bool:
    """Rule 1: a delta is shipped only if it is under ``MAX_SHARE`` of the full image."""
    return delta_size < MAX_SHARE * image_size


def choose_delta(
    target_id: int,
    base_sha256: str | None,
    candidates: Iterable[tuple[int, Mapping[str, Any]]],
    *,
    refused_before: bool,
) -> int | None:
    """Rule 2: the delta (id) to send instead of image ``target_id`` to a device whose
    installed image hashes to ``base_sha256``: one that rebuilds exactly that target from
    exactly that base. None if the base is unknown, or the device refused a delta for this
    release before (its next try gets the full image)."""
    if base_sha256 is None or refused_before:
        return None
    for delta_id, meta in candidates:
        if delta_of(meta) == target_id and meta.get("delta_base") == base_sha256:
            return delta_id
    return None
