"""The background refresh keeps every role valid: the timestamp is re-signed before it
expires, and nothing is signed when nothing is due."""

from __future__ import annotations

from datetime import timedelta

from tuf.api.metadata import Metadata, Timestamp


def _timestamp(client, repo: str = "") -> Metadata[Timestamp]:
    prefix = "/tuf/director" if repo == "director" else "/tuf"
    return Metadata[Timestamp].from_bytes(client.get(f"{prefix}/metadata/timestamp.json").content)


def test_timestamp_is_resigned_before_it_expires(client, ctx, clock):
    first = _timestamp(client)
    assert ctx.tuf.refresh(clock.now) == []  # fresh: nothing due
    clock.advance(hours=11)
    assert ctx.tuf.refresh(clock.now) == []  # more than half of its day left
    clock.advance(hours=2)
    signed = ctx.tuf.refresh(clock.now)
    assert "image/timestamp" in signed
    assert "director/timestamp" in signed
    now = _timestamp(client)
    assert now.signed.version == first.signed.version + 1
    assert now.signed.expires - clock.now > timedelta(hours=23)
    # Days later, with the refresh running, no role has expired.
    for _ in range(10 * 2):
        clock.advance(hours=12)
        ctx.tuf.refresh(clock.now)
    for repo in (ctx.tuf.image, ctx.tuf.director):
        with ctx.db.read() as s:
            for role, (_, expires) in repo.status(s).items():
                assert expires > clock.now, (repo, role)
