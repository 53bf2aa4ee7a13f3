"""Rollout under load: 10,000 simulated devices, a real server, a staged rollout, normal and emergency.

1. Start ``fleetwarden server`` (SQLite, 2 workers) and build a ``fleetwarden.sim`` Fleet of
   10,000 virtual devices in this process (the real agent state machine with a simulated
   installer; 1 % of installs fail and roll back). Every device enrolls through the real API
   with the agent's own code: enroll, open a session, first poll, inventory (setup, timed apart).
2. Two releases of one small artifact, and a maintenance window for the devices of site lyon
   (a fifth of the fleet) that is closed: it opens in about twelve hours.
3. Normal mode: a rollout of app@2.0 to every device in 5 waves (a 1 % canary, then 4 of 25 %),
   soak time between waves, windows respected. 5 % of the devices of every wave are offline for
   the whole run (the sim never wakes them). The clock starts at ``/start``; lyon's window opens
   a fixed time later (the script adds an always-open window for lyon then: cron has minute
   resolution). The figure is the time until 95 % of the online devices run app@2.0 and the
   server acknowledged it.
4. Emergency mode: the same with app@3.0, lyon's window closed again, started with
   ``{"emergency": true}``: windows and soak are ignored, the gates still hold.

Prints one JSON line: figure = normal-mode seconds, ``emergency_s``, ratio = emergency/normal,
target 600 s (this script's choice: ten minutes for 10,000 devices in five waves on two cores,
the scenario's own waits included). A rollout that does not reach 95 % within the time limit,
or stops making progress, reports ``null`` for its time and how far it got.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchlib.common import Proc, emit, group_cpu_seconds, note, start_server
from fleetwarden.agent import Agent
from fleetwarden.sim import Fleet, SimConfig

TARGET_S = 600.0
DEVICES = 10_000
FAILURE_RATE = 0.01
OFFLINE_EVERY = 20  # every 20th device of each wave is offline: 5 %
UPDATED_SHARE = 0.95
WINDOW_SITE = "lyon"


@dataclass(frozen=True)
class Scenario:
    poll: float  # seconds between polls of one device
    soak: int  # seconds between a wave reaching its gate and the next wave
    window_opens_after: float  # seconds after /start that lyon's window opens (normal mode)
    limit: float  # give up on a rollout after this many seconds
    stall: float  # ... or after this many seconds without one more device updated


FULL = Scenario(poll=15, soak=30, window_opens_after=60, limit=900, stall=120)
QUICK = Scenario(poll=10, soak=5, window_opens_after=15, limit=300, stall=60)


class _Counter(logging.Handler):
    """Counts the agents' warnings (server unreachable, deferred, refused) instead of printing
    ten thousand devices' worth of them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}
        self._mutex = threading.Lock()  # not ``lock``: logging.Handler has its own

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        kind = "unreachable" if "unreachable" in msg else msg.split("(")[0].strip()[:60]
        with self._mutex:
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def take(self) -> dict[str, int]:
        with self._mutex:
            counts, self.counts = self.counts, {}
        return counts


# -- setup ------------------------------------------------------------------------------------
def enroll(fleet: Fleet, threads: int) -> None:
    """Each virtual device's first ``run_once``: enroll, open a session, poll, send inventory."""

    def ready(a: Agent) -> bool:
        return a.identity is not None and a.server_fingerprint is not None

    for _ in range(3):
        todo = [a for a in fleet.agents if not ready(a)]
        if not todo:
            return
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda a: a.run_once(), todo))
    missing = sum(1 for a in fleet.agents if not ready(a))
    if missing:
        raise RuntimeError(f"{missing} devices did not enroll")


def make_release(api: httpx.Client, version: str) -> int:
    art = api.post(
        "/api/v1/artifacts",
        params={"name": "bench-app", "version": version, "type": "file"}
        | {"meta": ["path=/etc/bench-app.conf"]},
        content=f"# bench-app {version}\n".encode() * 64,
    )
    art.raise_for_status()
    rel = api.post(
        "/api/v1/releases",
        json={"name": "bench-app", "version": version, "artifacts": [art.json()["id"]]},
    )
    rel.raise_for_status()
    return int(rel.json()["id"])


def strategy(soak: int) -> dict[str, Any]:
    return {
        "canary": {"percent": 1},
        "waves": {"kind": "percent", "size": 25, "soak": soak},
        # 1 % failures must not trip the gate: a pause needs 10 % of at least 50 finished.
        "gates": {"success_percent": 90, "failure_percent": 10, "min_finished": 50},
        "budget": None,
        "windows": {"respect": True},
        "approval": {"required": False},
        "dynamic": False,
    }


# -- one rollout ------------------------------------------------------------------------------
class Run:
    def __init__(
        self,
        api: httpx.Client,
        fleet: Fleet,
        server: Proc,
        scenario: Scenario,
        *,
        release_id: int,
        label: str,
        emergency: bool,
        log_counter: _Counter,
    ) -> None:
        self.api, self.fleet, self.server, self.sc = api, fleet, server, scenario
        self.release_id, self.label, self.emergency = release_id, label, emergency
        self.log_counter = log_counter
        self.mode = "emergency" if emergency else "normal"
        self.want = json.dumps({"installed_release": label}).encode()

    def _create(self) -> tuple[int, list[int]]:
        r = self.api.post(
            "/api/v1/rollouts",
            json={
                "name": f"bench-{self.mode}",
                "release_id": self.release_id,
                "selector": "sim=true",
                "strategy": strategy(self.sc.soak),
            },
        )
        r.raise_for_status()
        rid = int(r.json()["id"])
        note(f"{self.mode}: {r.json()['events'][-1]['message']}")
        members = self.api.get(f"/api/v1/rollouts/{rid}/members", params={"limit": 10_000}).json()
        if len(members) != len(self.fleet.agents):
            raise RuntimeError(
                f"{len(members)} rollout members for {len(self.fleet.agents)} devices"
            )
        index = {a.identity.device_id: i for i, a in enumerate(self.fleet.agents) if a.identity}
        members.sort(key=lambda m: (m["wave"], m["position"]))
        offline, k, wave = [], 0, -1
        for m in members:
            k = 0 if m["wave"] != wave else k + 1
            wave = m["wave"]
            if k % OFFLINE_EVERY == OFFLINE_EVERY // 2:
                offline.append(index[m["device_id"]])
        return rid, offline

    def updated(self, online: list[Agent]) -> int:
        """Devices that run the release and whose final report the server acknowledged."""
        return sum(
            1
            for a in online
            if a.store.read("state.json") == self.want and a.store.read("journal.json") is None
        )

    def execute(self) -> dict[str, Any]:
        rid, offline = self._create()
        off = set(offline)
        online = [a for i, a in enumerate(self.fleet.agents) if i not in off]
        need = int(UPDATED_SHARE * len(online) + 0.999999)
        for i in range(len(self.fleet.agents)):
            self.fleet.offline_until[i] = float("inf") if i in off else 0.0
        stop = threading.Event()
        driver = threading.Thread(target=self.fleet.run, args=(stop,), name="fleet")
        driver.start()
        time.sleep(min(self.sc.poll, 5.0) + 1)  # every online device has woken once
        self.log_counter.take()
        cpu0, bench0 = group_cpu_seconds(self.server.pid), time.process_time()
        started = time.monotonic()
        wall_start = datetime.now(UTC)
        self.api.post(
            f"/api/v1/rollouts/{rid}/start", json={"emergency": self.emergency}
        ).raise_for_status()
        window_id: int | None = None
        reached: float | None = None
        last_n, last_change, last_note, n = 0, started, started, 0
        stalled = False
        try:
            while True:
                time.sleep(1.0)
                now = time.monotonic()
                elapsed = now - started
                if (
                    not self.emergency
                    and window_id is None
                    and elapsed >= self.sc.window_opens_after
                ):
                    window_id = open_window(self.api)
                    note(f"{self.mode}: lyon's maintenance window opened at {elapsed:.0f}s")
                n = self.updated(online)
                if n != last_n:
                    last_n, last_change = n, now
                if n >= need:
                    reached = elapsed
                    break
                if now - last_note >= 15:
                    last_note = now
                    note(
                        f"{self.mode}: {elapsed:5.0f}s  {n:,}/{len(online):,} online devices updated"
                    )
                if elapsed >= self.sc.limit:
                    break
                if now - last_change >= self.sc.stall and elapsed > self.sc.window_opens_after:
                    stalled = True
                    break
        finally:
            elapsed = time.monotonic() - started
            server_cpu = group_cpu_seconds(self.server.pid) - cpu0
            bench_cpu = time.process_time() - bench0
            stop.set()
            driver.join()
        outcome = (
            f"95 % reached in {reached:.1f}s"
            if reached is not None
            else ("stalled" if stalled else "time limit reached") + f" after {elapsed:.0f}s"
        )
        note(f"{self.mode}: {outcome}; {n:,} of {len(online):,} online devices updated")
        detail = self._finish(rid, wall_start)
        if window_id is not None:
            self.api.delete(f"/api/v1/windows/{window_id}").raise_for_status()
        return {
            "seconds": None if reached is None else round(reached, 1),
            "updated": n,
            "online": len(online),
            "offline": len(offline),
            "needed": need,
            "stalled": stalled,
            "elapsed_s": round(elapsed, 1),
            "server_cpu_s": round(server_cpu, 1),
            "bench_cpu_s": round(bench_cpu, 1),
            "agent_warnings": self.log_counter.take(),
            **detail,
        }

    def _finish(self, rid: int, wall_start: datetime) -> dict[str, Any]:
        """The server's view of the rollout (totals, when each wave started), then abort it so
        that its offline devices' pending assignments do not block the next rollout."""
        out: dict[str, Any] = {}
        try:
            r = self.api.get(f"/api/v1/rollouts/{rid}", timeout=300).json()
            out["server_totals"] = {k: v for k, v in r["totals"].items() if v}
            out["state"], out["wave"] = r["state"], r["current_wave"]
            starts = {}
            for e in r["events"]:
                m = re.match(r"wave (\d+) started", e["message"])
                if e["kind"] == "wave" and m:
                    at = datetime.fromisoformat(e["at"])
                    starts[int(m.group(1))] = round((at - wall_start).total_seconds(), 1)
            out["waves_started_s"] = [starts[w] for w in sorted(starts)]
        except (httpx.HTTPError, KeyError, ValueError) as e:
            note(f"{self.mode}: could not read the rollout back: {e}")
        r2 = self.api.post(
            f"/api/v1/rollouts/{rid}/abort", json={"reason": "bench done"}, timeout=300
        )
        if r2.status_code not in (200, 409):
            r2.raise_for_status()
        return out


def close_window(api: httpx.Client) -> int:
    """Lyon's regular window, closed now: it opens in about twelve hours (UTC)."""
    hour = (datetime.now(UTC).hour + 12) % 24
    r = api.post(
        "/api/v1/windows",
        json={
            "name": "lyon-nightly",
            "cron": f"0 {hour} * * *",
            "duration": "1h",
            "timezone": "UTC",
            "selector": f"site={WINDOW_SITE}",
        },
    )
    r.raise_for_status()
    if r.json()["open_now"]:
        raise RuntimeError("lyon's window should be closed")
    return int(r.json()["id"])


def open_window(api: httpx.Client) -> int:
    """An always-open window for lyon ("every minute, for a minute"): lyon's window opens."""
    r = api.post(
        "/api/v1/windows",
        json={
            "name": "lyon-open",
            "cron": "* * * * *",
            "duration": "1m",
            "timezone": "UTC",
            "selector": f"site={WINDOW_SITE}",
        },
        timeout=300,
    )
    r.raise_for_status()
    return int(r.json()["id"])


# -- main -------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="shorter poll, soak and limits (same fleet)"
    )
    p.add_argument("--devices", type=int, default=DEVICES, help="simulated devices (10,000)")
    p.add_argument("--server-workers", type=int, default=2, help="uvicorn workers (2)")
    p.add_argument("--sim-workers", type=int, default=32, help="threads driving the fleet (32)")
    p.add_argument("--enroll-threads", type=int, default=8, help="threads enrolling (8)")
    p.add_argument("--poll", type=float, help="poll interval, s (investigation)")
    p.add_argument("--soak", type=int, help="soak between waves, s (investigation)")
    p.add_argument("--limit", type=float, help="time limit per rollout, s (investigation)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    sc = QUICK if args.quick else FULL
    sc = dataclasses.replace(
        sc,
        poll=args.poll or sc.poll,
        soak=sc.soak if args.soak is None else args.soak,
        limit=args.limit or sc.limit,
    )
    # A SIGTERM (timeout, Ctrl-C from make) still stops the server and removes the temp dir.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    counter = _Counter()
    agent_log = logging.getLogger("fleetwarden.agent")
    agent_log.addHandler(counter)
    agent_log.propagate = False
    logging.getLogger("fleetwarden.sim").setLevel(logging.ERROR)

    tmp = Path(tempfile.mkdtemp(prefix="fw-bench-rollout-"))
    env = {
        "FLEETWARDEN_ROLLOUT_TICK_SECONDS": "1",
        "FLEETWARDEN_POLL_INTERVAL_SECONDS": str(int(sc.poll)),
        "FLEETWARDEN_SESSION_TOKEN_MINUTES": "240",  # no mass re-login during the run
        "FLEETWARDEN_LOG_LEVEL": "warning",
    }
    results: dict[str, dict[str, Any]] = {}
    fleet: Fleet | None = None
    try:
        t0 = time.monotonic()
        server, url, admin = start_server(tmp / "data", workers=args.server_workers, env=env)
        with server:
            if admin is None:
                raise RuntimeError("the server printed no bootstrap admin token")
            api = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=120
            )
            token = api.post(
                "/api/v1/enrollment-tokens",
                json={"uses": args.devices, "note": "bench/rollout_sim.py"},
            )
            token.raise_for_status()
            fleet = Fleet(
                SimConfig(
                    server=url,
                    enroll_token=token.json()["token"],
                    devices=args.devices,
                    poll_interval=sc.poll,
                    failure_rate=FAILURE_RATE,
                    install_duration=0.1,
                    workers=args.sim_workers,
                    seed=7,
                )
            )
            enroll(fleet, args.enroll_threads)
            setup = time.monotonic() - t0
            counter.take()
            note(f"setup: {args.devices:,} devices enrolled in {setup:.1f}s")
            releases = {"normal": make_release(api, "2.0"), "emergency": make_release(api, "3.0")}
            close_window(api)
            for mode, label in (("normal", "bench-app@2.0"), ("emergency", "bench-app@3.0")):
                results[mode] = Run(
                    api,
                    fleet,
                    server,
                    sc,
                    release_id=releases[mode],
                    label=label,
                    emergency=mode == "emergency",
                    log_counter=counter,
                ).execute()
            locked = server.output().count("database is locked")
    finally:
        if fleet is not None:
            fleet.close()
        if args.keep:
            note(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    normal, emergency = results["normal"]["seconds"], results["emergency"]["seconds"]
    ratio = round(emergency / normal, 3) if normal and emergency else None
    emit(
        "rollout_sim",
        normal,
        "s to 95% of online devices updated",
        TARGET_S,
        None,
        ratio,
        met=normal is not None and normal <= TARGET_S,
        emergency_s=emergency,
        devices=args.devices,
        setup_s=round(setup, 1),
        enroll_per_s=round(args.devices / setup, 1),
        waves=5,
        failure_rate=FAILURE_RATE,
        offline_share=1 / OFFLINE_EVERY,
        poll_interval_s=sc.poll,
        soak_s=sc.soak,
        window_opens_after_s=sc.window_opens_after,
        limit_s=sc.limit,
        server_workers=args.server_workers,
        sim_workers=args.sim_workers,
        db_locked_errors=locked,
        normal=results["normal"],
        emergency=results["emergency"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
