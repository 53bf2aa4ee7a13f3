"""``image`` artifacts: whole root-filesystem images written to the inactive A/B slot.

The flow (rules in ``core.ab``): mark the inactive slot bad, stream the image into it while
hashing what is written (the TUF-verified sha256 must match before the slot is activated), make
it primary with its boot attempts in one boot-environment write, and ask for a reboot. After
the reboot the agent calls ``verify_boot``: if the boot loader fell back, the update is
reported ``rolled_back`` with that reason; otherwise the health checks run and ``commit`` marks
the slot good. ``rollback`` marks it bad and restores the previous slot, asking for a reboot
if the device is running the new one.

A payload whose ``meta`` carries ``delta_base`` is a zstd delta against the image in the
running slot (``fleetwarden.agent.delta``): it is reconstructed and verified against the full
image's sha256 *before* the slot is touched, and refused if the running slot is not the base.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fleetwarden.agent import crashpoint
from fleetwarden.agent.boot import Bootloader
from fleetwarden.agent.delta import DeltaSpec, apply_delta, check_delta
from fleetwarden.agent.installers.base import InstallContext, Installer, InstallResult, Payload
from fleetwarden.core import ab
from fleetwarden.errors import InstallError

__all__ = ["ImageInstaller", "stream_to_slot"]

_CHUNK = 4 << 20


class ImageInstaller(Installer):
    type = "image"

    def __init__(
        self,
        bootloader: Bootloader,
        slots: Mapping[str, Path],
        *,
        attempts: int = ab.DEFAULT_ATTEMPTS,
        rate_limit: float | None = None,
    ) -> None:
        self.boot = bootloader
        self.slots = dict(slots)
        self.attempts = attempts
        #: Bytes per second written to the slot (None: as fast as the disk takes it).
        self.rate_limit = rate_limit

    def _payload(self, ctx: InstallContext) -> Payload:
        if len(ctx.payloads) != 1:
            raise InstallError(f"an image release carries one image, not {len(ctx.payloads)}")
        return ctx.payloads[0]

    def preflight(self, ctx: InstallContext) -> None:
        payload = self._payload(ctx)
        booted = self.boot.booted()
        target = ab.inactive_slot(self.boot.read(), booted)
        size = int(payload.ref.meta.get("image_size", payload.ref.size))
        capacity = _capacity(self.slots[target])
        if capacity is not None and size > capacity:
            raise InstallError(
                f"image of {size} bytes does not fit slot {target} ({capacity} bytes)"
            )
        delta = DeltaSpec.from_meta(payload.ref.meta)
        if delta is not None:
            check_delta(delta, payload.path, self.slots[booted])

    def prepare(self, ctx: InstallContext) -> Mapping[str, Any]:
        booted = self.boot.booted()
        return {"target": ab.inactive_slot(self.boot.read(), booted), "previous": booted}

    def install(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult:
        payload = self._payload(ctx)
        target, previous = snapshot["target"], snapshot["previous"]
        self.boot.write(ab.begin_write(self.boot.read(), target))  # rule 1, before any byte
        crashpoint.hit("image.marked-bad")
        delta = DeltaSpec.from_meta(payload.ref.meta)
        if delta is None:
            want = payload.ref.sha256
            with payload.path.open("rb") as src:
                stream_to_slot(src.read, self.slots[target], want, rate_limit=self.rate_limit)
        else:
            want = delta.image_sha256
            apply_delta(
                delta,
                payload.path,
                self.slots[previous],
                lambda read: stream_to_slot(
                    read, self.slots[target], want, rate_limit=self.rate_limit
                ),
            )
        crashpoint.hit("image.written")
        self.boot.write(ab.activate(self.boot.read(), target, self.attempts))  # rule 2
        crashpoint.hit("image.activated")
        return InstallResult(needs_reboot=True)

    def verify_boot(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        target, booted = snapshot["target"], self.boot.booted()
        if ab.after_boot(target, booted) is ab.BootVerdict.FELL_BACK:
            raise InstallError(
                f"the boot loader fell back to slot {booted}: slot {target} did not boot "
                f"within {self.attempts} attempt(s)"
            )

    def commit(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> None:
        target = snapshot["target"]
        self.boot.write(ab.commit(self.boot.read(), target, self.boot.booted(), self.attempts))
        crashpoint.hit("image.committed")

    def rollback(self, ctx: InstallContext, snapshot: Mapping[str, Any]) -> InstallResult:
        plan = ab.rollback(
            self.boot.read(), snapshot["target"], snapshot["previous"], self.boot.booted()
        )
        self.boot.write(plan.env)
        crashpoint.hit("image.rolled-back")
        return InstallResult(needs_reboot=plan.reboot)


def stream_to_slot(
    read: Callable[[int], bytes],
    slot: Path,
    sha256: str,
    *,
    rate_limit: float | None = None,
) -> int:
    """Write everything ``read`` yields to ``slot`` from offset 0, hashing as it goes, then
    fsync and compare with ``sha256``. Returns the bytes written.

    Hashing runs on a second thread, overlapped with the writes (both release the GIL), so
    the slot is written at close to the disk's speed rather than at the sum of the two costs
    (bench/delta.py compares it with dd).

    Raises:
        InstallError: the written bytes do not hash to ``sha256`` (the slot stays bad).
    """
    h = hashlib.sha256()
    written = 0
    started = time.monotonic()
    fd = os.open(slot, os.O_WRONLY | os.O_CREAT, 0o600)
    pending: Future[None] | None = None
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="slot-hash") as hasher:
            while chunk := read(_CHUNK):
                if pending is not None:
                    pending.result()  # at most one chunk in flight: bounded memory
                pending = hasher.submit(h.update, chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                written += len(chunk)
                crashpoint.hit("image.chunk")
                if rate_limit:
                    ahead = written / rate_limit - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
            if pending is not None:
                pending.result()
        if slot.is_file():
            os.ftruncate(fd, written)
        os.fsync(fd)
    except OSError as e:
        raise InstallError(f"writing slot {slot} failed after {written} bytes: {e}") from e
    finally:
        os.close(fd)
    if h.hexdigest() != sha256:
        raise InstallError(
            f"slot {slot}: wrote {written} bytes hashing to {h.hexdigest()}, expected {sha256}"
        )
    return written


def _capacity(slot: Path) -> int | None:
    """A block device's size; None for a regular file (it grows)."""
    try:
        if not slot.exists() or slot.is_file():
            return None
        with slot.open("rb") as f:
            return f.seek(0, os.SEEK_END)
    except OSError as e:
        raise InstallError(f"cannot open slot {slot}: {e}") from e
