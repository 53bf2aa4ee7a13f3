"""TUF: publish one release to 100,000 devices (director metadata in hashed bins).

1. A database (SQLite in a temp dir) with 100,000 devices, one artifact and release, and one
   pending assignment per device (bulk-inserted: setup, not measured), and a TUF service with
   development keys (Ed25519 files) and 1,024 director bins (``tuf_director_bin_bits = 10``).
2. Figure: seconds for ``publish_director`` — the same call the server makes in the
   transaction that creates the assignments: read every unfinished assignment, build 100,000
   director entries, sign the 1,024 bins, the snapshot and the timestamp, store them.
3. Bytes a device downloads per refresh, measured with python-tuf's own ngclient over a
   fetcher that counts bytes: ``warm_refresh_bytes`` for a device that had refreshed before the
   release (new timestamp, snapshot and its bin), ``cold_refresh_bytes`` for a new device (also
   root and targets). The device then finds its director entry.

Baseline: serializing the same 100,000 entries to JSON once without signing or storing
(``json.dumps``), so ``ratio`` is publish time over bare serialization.

Targets: < 5 s to publish, < 100 KB per device refresh (the warm refresh; cold is reported).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert
from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from benchlib.common import emit, note
from fleetwarden.core.tuf_rules import director_path, image_path
from fleetwarden.errors import NotFoundError
from fleetwarden.server.db import Database
from fleetwarden.server.models import (
    Artifact,
    Assignment,
    Device,
    Release,
    ReleaseArtifact,
)
from fleetwarden.server.tuf.repository import Repository
from fleetwarden.server.tuf.service import TufService

TARGET_SECONDS = 5.0
TARGET_BYTES = 100_000
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class CountingFetcher(FetcherInterface):
    """Serves a repository's files straight from the database and counts the bytes."""

    def __init__(self, db: Database, repo: Repository) -> None:
        self.db, self.repo, self.bytes = db, repo, 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.rsplit("/", 1)[-1]
        try:
            with self.db.read() as s:
                data = self.repo.file(s, name)
        except NotFoundError as e:
            raise DownloadHTTPError(str(e), 404) from e
        self.bytes += len(data)
        yield data


def setup(db: Database, devices: int) -> tuple[Artifact, list[str]]:
    with db.write() as s:
        art = Artifact(
            name="gw-firmware",
            version="2.0.0",
            type="file",
            sha256="ab" * 32,
            size=48 * 1024**2,
            compatible_models=[],
            meta={},
            created_at=NOW,
            created_by="bench",
            release_counter=2,
        )
        rel = Release(
            name="gw-firmware", version="2.0.0", health_checks=[], created_at=NOW, created_by="b"
        )
        s.add_all([art, rel])
        s.flush()
        s.add(ReleaseArtifact(release_id=rel.id, artifact_id=art.id, position=0))
        ids = [f"dev-{i * 2654435761 % 2**64:016x}" for i in range(devices)]
        s.execute(
            insert(Device),
            [
                {"id": d, "name": d, "labels": {}, "enrolled_at": NOW, "status": "active"}
                for d in ids
            ],
        )
        s.execute(
            insert(Assignment),
            [
                {
                    "device_id": d,
                    "release_id": rel.id,
                    "state": "pending",
                    "detail": "",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for d in ids
            ],
        )
        s.expunge(art)
    return art, ids


def updater(
    tmp: Path, name: str, db: Database, repo: Repository, root: bytes
) -> tuple[Updater, CountingFetcher]:
    meta = tmp / name
    meta.mkdir(exist_ok=True)
    fetcher = CountingFetcher(db, repo)
    u = Updater(
        metadata_dir=str(meta),
        metadata_base_url="http://bench/tuf/director/metadata/",
        target_dir=str(tmp),
        target_base_url="http://bench/tuf/targets/",
        fetcher=fetcher,
        bootstrap=root,
    )
    return u, fetcher


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="same scale; one publish instead of 3")
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument("--bits", type=int, default=10, help="director bins: 2**bits (10)")
    args = p.parse_args()
    reps = 1 if args.quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="fw-bench-tuf-"))
    try:
        db = Database(f"sqlite:///{tmp / 'db.sqlite'}")
        db.migrate()
        service = TufService(db, tmp / "keys", director_bin_bits=args.bits)
        t0 = time.perf_counter()
        service.bootstrap(NOW, dev_root_dir=tmp / "root")
        note(
            f"repositories initialised ({2**args.bits} director bins) in {time.perf_counter() - t0:.1f}s"
        )
        with db.read() as s:
            root = service.director.file(s, "root.json")
        # A device that refreshed before the release: it holds the previous metadata.
        before, _ = updater(tmp, "warm", db, service.director, root)
        before.refresh()

        t0 = time.perf_counter()
        art, ids = setup(db, args.devices)
        note(
            f"{args.devices:,} devices with a pending assignment inserted in {time.perf_counter() - t0:.1f}s"
        )

        timings = []
        for rep in range(reps):
            if rep:  # publish the same release again, as a new assignment set would
                with db.write() as s:
                    s.execute(Assignment.__table__.update().values(detail=f"rep {rep}"))
            t0 = time.perf_counter()
            with db.write() as s:
                signed = service.publish_director(s, NOW, force=rep > 0)
            timings.append(time.perf_counter() - t0)
            note(f"publish {rep + 1}/{reps}: {timings[-1]:.2f}s, {len(signed)} roles signed")
        figure = min(timings)

        with db.read() as s:
            entries = service.director_entries(s)
        t0 = time.perf_counter()
        json.dumps({p: tf.to_dict() for p, tf in entries.items()})
        baseline = time.perf_counter() - t0

        device = ids[len(ids) // 2]
        path = director_path(device, image_path(art.id, art.name, art.version))
        warm, warm_fetch = updater(tmp, "warm", db, service.director, root)
        warm.refresh()
        warm_info = warm.get_targetinfo(path)
        cold, cold_fetch = updater(tmp, "cold", db, service.director, root)
        cold.refresh()
        cold_info = cold.get_targetinfo(path)
        if warm_info is None or cold_info is None or warm_info.custom["device_id"] != device:
            raise RuntimeError("the device did not find its director entry")
        repo, role = service.director, service.director.bin_for(path)
        with db.read() as s:
            versions = repo.status(s)
            bin_bytes = len(repo.file(s, f"{versions[role][0]}.{role}.json"))
            snapshot_bytes = len(repo.file(s, f"{versions['snapshot'][0]}.snapshot.json"))
        emit(
            "tuf",
            round(figure, 3),
            "s to publish",
            TARGET_SECONDS,
            round(baseline, 3),
            round(figure / baseline, 1),
            met=figure < TARGET_SECONDS and warm_fetch.bytes < TARGET_BYTES,
            devices=args.devices,
            director_bins=2**args.bits,
            publishes=[round(t, 3) for t in timings],
            warm_refresh_bytes=warm_fetch.bytes,
            cold_refresh_bytes=cold_fetch.bytes,
            bytes_target=TARGET_BYTES,
            bin_bytes=bin_bytes,
            snapshot_bytes=snapshot_bytes,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
