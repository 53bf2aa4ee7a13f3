"""Planner tick: one ``plan_tick`` over a rollout of 1,000,000 devices in 1,000 zones.

Builds, in this process, the ``RolloutView`` the controller would read from the database for a
rollout in full swing: five waves (a 1 % canary, then four of 25 %), the third wave running,
members in every status (succeeded, failed with retries left and without, in progress with
some past the in-progress timeout, waiting, blocked by another deployment, revoked), a
disruption budget of 10 % per zone, a fleet-wide rate limit that grows with the devices
notified, and 24 maintenance windows (one per hour of the day, each four hours long, in four
time zones) that apply to 60 % of the zones, so some are open and some closed. Then times
``plan_tick`` on it (10 ticks; 3 with ``--quick``, same million devices).

Baseline: one plain Python pass over the same member list (``for m in members: if m.status is
WAITING: n += 1``), so ``ratio`` says how many such passes one tick costs.

Memory: the process's peak RSS (VmHWM) is reset just before each tick (``/proc/self/clear_refs``)
and read right after, so it is the peak *during* the tick, view included; the target is checked
against that. The tick's own growth (that peak minus the RSS just before the tick) and the
process's lifetime peak (which includes building the view) are reported beside it.

Prints one JSON line: figure = seconds per tick (median), target 2; extras devices_per_second,
rss_peak_mib (target 1536) and the counts the tick produced.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchlib.common import emit, note
from fleetwarden.core.assignments import AssignmentState
from fleetwarden.core.rollout.planner import Member, MemberStatus, RolloutView, Tick, plan_tick
from fleetwarden.core.rollout.strategy import (
    Budget,
    Canary,
    FailureAction,
    Gates,
    RateLimit,
    Strategy,
    WaveSpec,
)
from fleetwarden.core.rollout.waves import wave_sizes
from fleetwarden.core.rollout.windows import Window

TARGET_SECONDS = 2.0
TARGET_RSS_MIB = 1536.0
DEVICES = 1_000_000
ZONES = 1_000
MODELS = ("gw-100", "gw-200", "gw-300", "srv-10", "srv-20", "rpi4", "x86-nuc", "")
NOW = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)
CURRENT_WAVE = 2

A = AssignmentState
MS = MemberStatus
_IN_FLIGHT = (A.PENDING, A.DOWNLOADING, A.DOWNLOADING, A.INSTALLING, A.REBOOTING, A.VERIFYING)

STRATEGY = Strategy(
    canary=Canary(percent=1.0),
    waves=WaveSpec(size=25.0, soak=timedelta(minutes=30)),
    gates=Gates(
        success_percent=95.0,
        failure_percent=5.0,
        min_finished=100,
        on_failure=FailureAction.PAUSE,
        in_progress_timeout=timedelta(hours=4),
        max_retries=2,
        retry_backoff=timedelta(minutes=10),
    ),
    budget=Budget(group_by="zone", max_in_progress=None, max_percent=10.0),
    rate=RateLimit(per_minute=2_000, increment_factor=1.5, increase_every=50_000),
)


# -- the view -----------------------------------------------------------------------------------
def _windows() -> dict[int, Window]:
    zones = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
    return {
        wid: Window(f"0 {wid} * * *", timedelta(hours=4), zones[wid % len(zones)])
        for wid in range(24)
    }


def _member(
    rng: random.Random, i: int, wave: int, progress: float, windows: tuple[int, ...]
) -> Member:
    """Device ``i`` of ``wave``; ``progress`` is its position in its wave (0..1)."""
    base = {
        "device_id": f"dev-{i * 2654435761 % 2**64:016x}",
        "wave": wave,
        "group": f"zone-{i % ZONES:04d}",
        "model": MODELS[i % len(MODELS)],
        "windows": windows,
    }
    r = rng.random()
    if r < 0.003:
        return Member(**base, status=MS.SKIPPED)  # revoked since the rollout was planned
    blocked = rng.random() < 0.002  # another rollout or deployment holds it
    # Earlier waves are done, the current one is 40 % through; later ones have not started.
    started = wave < CURRENT_WAVE or (wave == CURRENT_WAVE and progress < 0.46)
    if not started:
        return Member(**base, blocked=blocked)
    finished = wave < CURRENT_WAVE or progress < 0.40
    since = NOW - timedelta(seconds=rng.randrange(60, 6 * 3600))
    if not finished or r < 0.013:
        # In progress; a few since longer than the in-progress timeout (4 h).
        if wave == CURRENT_WAVE and rng.random() < 0.3:
            since = NOW - timedelta(seconds=rng.randrange(0, 120))  # assigned in the last minutes
        return Member(
            **base, status=MS.ACTIVE, state=rng.choice(_IN_FLIGHT), since=since, attempts=1
        )
    finished_at = since + timedelta(seconds=rng.randrange(30, 1800))
    if r < 0.028:  # about 1.5 % fail; retries (max 2, 10 min backoff doubling) may be due
        return Member(
            **base,
            status=MS.FAILED,
            state=A.ROLLED_BACK if r < 0.02 else A.FAILED,
            since=since,
            finished_at=finished_at,
            attempts=rng.choice((1, 1, 2, 3)),
        )
    return Member(
        **base,
        status=MS.SUCCEEDED,
        state=A.SUCCEEDED,
        since=since,
        finished_at=finished_at,
        attempts=1,
    )


def build_view(devices: int, seed: int = 1) -> RolloutView:
    rng = random.Random(seed)
    canary = STRATEGY.canary.size(devices)
    sizes = [canary, *wave_sizes(STRATEGY.waves, devices - canary)]
    windows = _windows()
    # 60 % of the zones have a maintenance window (one of 24), the rest may install any time.
    zone_windows = [((z * 7) % 24,) if z % 5 < 3 else () for z in range(ZONES)]
    members: list[Member] = []
    i = 0
    for wave, size in enumerate(sizes):
        for k in range(size):
            members.append(_member(rng, i, wave, k / size, zone_windows[i % ZONES]))
            i += 1
    return RolloutView(
        strategy=STRATEGY,
        members=members,
        windows=windows,
        current_wave=CURRENT_WAVE,
        wave_count=len(sizes),
        wave_completed_at=None,
    )


# -- memory -------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if m is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return int(m.group(1))


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# -- measurements -------------------------------------------------------------------------------
def plain_pass(members: list[Member]) -> int:
    n = 0
    waiting = MS.WAITING
    for m in members:
        if m.status is waiting:
            n += 1
    return n


def timed_tick(view: RolloutView) -> tuple[float, float, float, Tick]:
    """One tick: seconds, the process's peak RSS during it and its growth (MiB)."""
    before = _status_kib("VmRSS")
    resettable = reset_peak()
    started = time.perf_counter()
    tick = plan_tick(view, NOW)
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM") if resettable else max(before, _status_kib("VmRSS"))
    return seconds, peak / 1024, (peak - before) / 1024, tick


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 ticks instead of 10 (same devices)")
    p.add_argument("--ticks", type=int, help="ticks to time (10; quick: 3)")
    p.add_argument("--devices", type=int, default=DEVICES, help="rollout members (1,000,000)")
    args = p.parse_args()
    reps = args.ticks or (3 if args.quick else 10)

    rss_start = _status_kib("VmRSS") / 1024
    started = time.perf_counter()
    view = build_view(args.devices)
    members = list(view.members)
    gc.collect()
    rss_view = _status_kib("VmRSS") / 1024
    build_peak = _status_kib("VmHWM") / 1024  # read before the first reset
    note(
        f"built a view of {len(members):,} members in {ZONES:,} zones, {view.wave_count} waves, "
        f"in {time.perf_counter() - started:.1f}s; RSS {rss_start:.0f} -> {rss_view:.0f} MiB"
    )

    tick_s: list[float] = []
    peaks: list[float] = []
    growth: list[float] = []
    passes: list[float] = []
    tick = Tick()
    for rep in range(reps):
        t0 = time.perf_counter()
        plain_pass(members)
        passes.append(time.perf_counter() - t0)
        seconds, peak, grew, tick = timed_tick(view)
        tick_s.append(seconds)
        peaks.append(peak)
        growth.append(grew)
        note(
            f"tick {rep + 1}/{reps}: {seconds:.3f}s (plain pass {passes[-1]:.3f}s), "
            f"RSS peak {peak:.0f} MiB (+{grew:.1f}); assigned {len(tick.assign):,}, "
            f"timed out {len(tick.timeouts):,}, waiting for a window {tick.waiting_for_window:,}"
        )
    if not tick.assign or tick.pause or tick.abort:
        raise RuntimeError(f"the tick did not plan a rollout in full swing: {tick.pause or ''}")

    figure = statistics.median(tick_s)
    baseline = statistics.median(passes)
    rss_peak = max(peaks)
    lifetime_peak = max(build_peak, rss_peak)
    met = figure < TARGET_SECONDS and rss_peak < TARGET_RSS_MIB
    emit(
        "plan",
        round(figure, 3),
        "s/tick",
        TARGET_SECONDS,
        round(baseline, 3),
        round(figure / baseline, 1),
        met=met,
        devices=len(members),
        zones=ZONES,
        waves=view.wave_count,
        devices_per_second=math.floor(len(members) / figure),
        ticks=reps,
        tick_min_s=round(min(tick_s), 3),
        tick_max_s=round(max(tick_s), 3),
        rss_peak_mib=round(rss_peak, 1),
        rss_target_mib=TARGET_RSS_MIB,
        rss_checked="process peak RSS during the tick (view included)",
        rss_tick_growth_mib=round(max(growth), 1),
        rss_view_mib=round(rss_view - rss_start, 1),
        rss_process_lifetime_peak_mib=round(lifetime_peak, 1),
        assigned=len(tick.assign),
        timed_out=len(tick.timeouts),
        waiting_for_window=tick.waiting_for_window,
        blocked=tick.blocked,
        wave_stats={
            "size": tick.wave.size,
            "waiting": tick.wave.waiting,
            "active": tick.wave.active,
            "succeeded": tick.wave.succeeded,
            "failed": tick.wave.failed,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
