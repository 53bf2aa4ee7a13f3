"""Background jobs of one replica: small periodic loops, each safe to run on every replica."""

from __future__ import annotations

import asyncio
import logging
import time

import anyio
from sqlalchemy import bindparam, update

from fleetwarden.server.context import ServerContext
from fleetwarden.server.leader import Leadership
from fleetwarden.server.models import Device
from fleetwarden.server.services.rollout_tick import tick_all

__all__ = ["flush_presence", "run_controller", "run_jobs", "run_tuf_refresh", "tick_all"]

log = logging.getLogger("fleetwarden.jobs")

_MIN_WOKEN_GAP = 0.25


def flush_presence(ctx: ServerContext) -> int:
    """Write the "last seen" times this replica collected; return how many devices."""
    seen = ctx.presence.drain()
    if not seen:
        return 0
    stmt = (
        update(Device)
        .where(Device.id == bindparam("did"))
        .values(last_seen_at=bindparam("at"))
        .execution_options(synchronize_session=False)
    )
    try:
        with ctx.db.write() as s:
            s.connection().execute(stmt, [{"did": d, "at": at} for d, at in seen.items()])
    except Exception:
        # Put them back so the next flush retries; presence is best-effort but not lossy.
        for d, at in seen.items():
            ctx.presence.saw(d, at)
        raise
    return len(seen)


async def run_jobs(ctx: ServerContext) -> None:
    """Run until cancelled. A failing tick is logged and retried; it never stops the loop."""
    interval = ctx.settings.presence_flush_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(flush_presence, ctx)
        except Exception:
            log.exception("presence flush failed; will retry")


async def run_controller(ctx: ServerContext, leadership: Leadership) -> None:
    """The rollout controller: tick every ``rollout_tick_seconds``, or at once when woken by
    device feedback or an operator's verb. Only the elected leader ticks."""
    interval = ctx.settings.rollout_tick_seconds
    took = 0.0
    try:
        while True:
            # Woken ticks come at most as often as a tick takes (and 4 per second), so a
            # stream of device reports cannot keep the controller in the database.
            gap = max(_MIN_WOKEN_GAP, took)
            waited = 0.0
            while waited < interval and not (ctx.controller_wakeup.is_set() and waited >= gap):
                await asyncio.sleep(0.05)
                waited += 0.05
            ctx.controller_wakeup.clear()
            started = time.monotonic()
            try:
                if await anyio.to_thread.run_sync(leadership.acquire):
                    await anyio.to_thread.run_sync(tick_all, ctx)
            except Exception:
                log.exception("rollout controller tick failed; will retry")
            took = time.monotonic() - started
    finally:
        leadership.release()


async def run_tuf_refresh(ctx: ServerContext) -> None:
    """Keep the TUF repositories fresh: re-sign the timestamp (and any role) before it
    expires, and publish director entries removed lazily. Every hour the director's entries
    are recomputed in full, which also re-signs bins that are close to expiry."""
    interval = ctx.settings.tuf_refresh_seconds
    full_every = max(1, round(3600 / interval))
    n = 0
    while True:
        await asyncio.sleep(interval)
        n += 1
        try:
            full = n % full_every == 0
            signed = await anyio.to_thread.run_sync(
                lambda: ctx.tuf.refresh(ctx.clock(), full=full)  # noqa: B023 - awaited here
            )
            if signed:
                log.debug("TUF: signed %s", ", ".join(signed))
        except Exception:
            log.exception("TUF refresh failed; will retry")
