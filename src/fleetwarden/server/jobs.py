"""Background jobs of one replica: small periodic loops, each safe to run on every replica."""

from __future__ import annotations

import asyncio
import logging

import anyio
from sqlalchemy import bindparam, update

from fleetwarden.server.context import ServerContext
from fleetwarden.server.models import Device

__all__ = ["flush_presence", "run_jobs"]

log = logging.getLogger("fleetwarden.jobs")


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
