"""Image deltas: zstd (``core.delta``, the library form of ``zstd --patch-from``) against
bsdiff, on two consecutive real Debian package sets; and the agent's slot write against dd.

1. Two "images": the same set of Debian packages (python3.11, OpenSSL, Perl, systemd, git)
   at two consecutive versions from the Debian archive (``apt-get download``, cached under
   ``~/.cache/fleetwarden-bench``), each set unpacked with ``dpkg-deb -x`` and packed as a
   deterministic tar (sorted names, mtime 0, uid/gid 0) — what an image build produces.
2. Full: the new image compressed with zstd -19 (what a device downloads without a delta).
3. zstd delta (``core.delta.make_delta``) and ``bsdiff`` (Debian's bsdiff 4.3): bytes, seconds
   and peak RSS, each in its own process; both are applied back and checked.
   Each is also applied as a device would: the agent's code (verify pass, then rebuild into
   a slot file, hashed) and ``bspatch``.
4. Slot write: ``stream_to_slot`` (the image installer's writer: hash while writing, fsync)
   against ``dd bs=1M conv=fsync`` of the same image into a slot file, best of three each.

Figure: zstd delta bytes as a share of the full compressed image (target ≤ 0.20). Baseline for
the ratio: bsdiff's share (so ``ratio`` < 1 means zstd's patch is bigger than bsdiff's).
``slot_write_ratio`` is the agent's write throughput over dd's (target ≥ 0.80).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchlib.common import emit, note

PACKAGES = [
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11-minimal",
    "openssl",
    "libssl3",
    "perl-modules-5.36",
    "libperl5.36",
    "systemd",
    "libsystemd-shared",
    "git",
]
QUICK_PACKAGES = ["libpython3.11-stdlib", "openssl", "libssl3"]
CACHE = Path.home() / ".cache" / "fleetwarden-bench" / "debs"


def _versions(pkg: str) -> tuple[str, str]:
    """The two newest distinct versions the archive offers (older, newer)."""
    out = subprocess.run(
        ["apt-cache", "madison", pkg], capture_output=True, text=True, check=True
    ).stdout
    seen: list[str] = []
    for line in out.splitlines():
        v = line.split("|")[1].strip()
        if v not in seen:
            seen.append(v)
    if not seen:
        raise SystemExit(f"apt-cache knows no {pkg}; run apt-get update")
    ordered = sorted(seen, key=_debver_key)
    return (ordered[-2] if len(ordered) > 1 else ordered[-1]), ordered[-1]


def _debver_key(v: str):
    import functools

    def cmp(a: str, b: str) -> int:
        r = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False)
        return -1 if r.returncode == 0 else (0 if a == b else 1)

    return functools.cmp_to_key(cmp)(v)


def _download(pkg: str, version: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = f"{pkg}_{version.replace(':', '%3a')}_"
    found = [p for p in CACHE.iterdir() if p.name.startswith(stem)]
    if found:
        return found[0]
    subprocess.run(
        ["apt-get", "download", "-q", f"{pkg}={version}"],
        cwd=CACHE,
        check=True,
        capture_output=True,
    )
    found = [p for p in CACHE.iterdir() if p.name.startswith(stem)]
    if not found:
        raise SystemExit(f"apt-get download {pkg}={version} produced no file")
    return found[0]


def _image(debs: list[Path], tree: Path, out: Path) -> int:
    tree.mkdir(parents=True)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(tree.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(tree)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return out.stat().st_size


def _measure(argv: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed")
    return elapsed, usage.ru_maxrss / 1024


_ZSTD_DELTA = """
import sys
from pathlib import Path
from fleetwarden.core.delta import make_delta
base, new, out = map(Path, sys.argv[1:4])
out.write_bytes(make_delta(base.read_bytes(), new.read_bytes()))
"""

_ZSTD_FULL = """
import sys
from pathlib import Path
import zstandard
src, out = map(Path, sys.argv[1:3])
out.write_bytes(zstandard.ZstdCompressor(level=19).compress(src.read_bytes()))
"""


_ZSTD_APPLY = """
import hashlib, sys
from pathlib import Path
from fleetwarden.agent.delta import apply_delta
from fleetwarden.agent.installers.image import stream_to_slot
from fleetwarden.core.delta import DeltaSpec
base, new, delta, slot = map(Path, sys.argv[1:5])
b, n = base.read_bytes(), new.read_bytes()
spec = DeltaSpec(hashlib.sha256(b).hexdigest(), len(b), hashlib.sha256(n).hexdigest(), len(n))
del b, n
want = spec.image_sha256
apply_delta(spec, delta, base, lambda read: stream_to_slot(read, slot, want))
"""


def _slot_write(image: Path, work: Path, rounds: int) -> tuple[float, float]:
    from fleetwarden.agent.installers.image import stream_to_slot

    want = hashlib.sha256(image.read_bytes()).hexdigest()
    size = image.stat().st_size
    ours, dd = [], []
    for i in range(rounds):
        slot = work / f"slot-ours-{i}"
        started = time.perf_counter()
        with image.open("rb") as src:
            stream_to_slot(src.read, slot, want)
        ours.append(size / (time.perf_counter() - started))
        slot.unlink()
        slot = work / f"slot-dd-{i}"
        started = time.perf_counter()
        subprocess.run(
            ["dd", f"if={image}", f"of={slot}", "bs=1M", "conv=fsync", "status=none"],
            check=True,
        )
        dd.append(size / (time.perf_counter() - started))
        slot.unlink()
    return max(ours), max(dd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three packages instead of ten")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    for tool in ("bsdiff", "bspatch", "dpkg-deb", "apt-get", "dd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (apt-get install bsdiff dpkg)")
    pkgs = QUICK_PACKAGES if args.quick else PACKAGES
    work = Path(tempfile.mkdtemp(prefix="fw-bench-delta-"))
    try:
        pairs = {p: _versions(p) for p in pkgs}
        changed = sum(1 for a, b in pairs.values() if a != b)
        note(f"{len(pkgs)} packages, {changed} at two versions; downloading (cached)")
        old = [_download(p, a) for p, (a, _) in pairs.items()]
        new = [_download(p, b) for p, (_, b) in pairs.items()]
        base_img, new_img = work / "old.tar", work / "new.tar"
        base_size = _image(old, work / "old", base_img)
        new_size = _image(new, work / "new", new_img)
        note(f"images: {base_size / 1e6:.1f} MB -> {new_size / 1e6:.1f} MB")
        full = work / "new.tar.zst"
        full_s, _ = _measure([sys.executable, "-c", _ZSTD_FULL, str(new_img), str(full)])
        full_size = full.stat().st_size
        note(f"full zstd -19: {full_size / 1e6:.2f} MB in {full_s:.1f}s")
        zd = work / "delta.zst"
        z_s, z_rss = _measure(
            [sys.executable, "-c", _ZSTD_DELTA, str(base_img), str(new_img), str(zd)]
        )
        z_size = zd.stat().st_size
        note(f"zstd delta: {z_size / 1e6:.2f} MB in {z_s:.1f}s, peak {z_rss:.0f} MiB")
        # Applied as the agent does: verify pass, then rebuild into a slot file, hashed.
        slot = work / "slot"
        za_s, za_rss = _measure(
            [sys.executable, "-c", _ZSTD_APPLY, str(base_img), str(new_img), str(zd), str(slot)]
        )
        if slot.read_bytes() != new_img.read_bytes():
            raise SystemExit("zstd delta does not rebuild the image")
        slot.unlink()
        note(f"zstd apply (agent): {za_s:.1f}s, peak {za_rss:.0f} MiB")
        bd = work / "delta.bsdiff"
        b_s, b_rss = _measure(["bsdiff", str(base_img), str(new_img), str(bd)])
        b_size = bd.stat().st_size
        rebuilt = work / "rebuilt.tar"
        note(f"bsdiff: {b_size / 1e6:.2f} MB in {b_s:.1f}s, peak {b_rss:.0f} MiB")
        ba_s, ba_rss = _measure(["bspatch", str(base_img), str(rebuilt), str(bd)])
        if rebuilt.read_bytes() != new_img.read_bytes():
            raise SystemExit("bsdiff patch does not rebuild the image")
        note(f"bspatch: {ba_s:.1f}s, peak {ba_rss:.0f} MiB")
        ours, dd = _slot_write(new_img, work, 3)
        note(f"slot write: ours {ours / 1e6:.0f} MB/s, dd {dd / 1e6:.0f} MB/s")
        share = z_size / full_size
        bshare = b_size / full_size
        emit(
            "delta",
            round(share, 4),
            "zstd delta bytes / full zstd -19 image bytes",
            0.20,
            round(bshare, 4),
            round(bshare / share, 3),
            met=share <= 0.20 and ours / dd >= 0.80,
            packages=len(pkgs),
            packages_changed=changed,
            image_bytes=[base_size, new_size],
            full_bytes=full_size,
            zstd={
                "bytes": z_size,
                "seconds": round(z_s, 2),
                "peak_rss_mib": round(z_rss),
                "apply_seconds": round(za_s, 2),
                "apply_peak_rss_mib": round(za_rss),
            },
            bsdiff={
                "bytes": b_size,
                "seconds": round(b_s, 2),
                "peak_rss_mib": round(b_rss),
                "apply_seconds": round(ba_s, 2),
                "apply_peak_rss_mib": round(ba_rss),
            },
            slot_write_mb_s=round(ours / 1e6, 1),
            dd_mb_s=round(dd / 1e6, 1),
            slot_write_ratio=round(ours / dd, 3),
            slot_write_target=0.80,
        )
    finally:
        if args.keep:
            note(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    io.DEFAULT_BUFFER_SIZE = 1 << 20
    raise SystemExit(main())
