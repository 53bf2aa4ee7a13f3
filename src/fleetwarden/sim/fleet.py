"""Run N virtual agents against a server.

Faults (all optional, all driven by one seeded RNG so a run can be repeated):
  * ``failure_rate`` — an install fails (the agent rolls back and reports rolled_back);
  * ``health_failure_rate`` — an install succeeds but the health check fails;
  * ``offline_rate`` — at each wake-up a device may drop off the network for 1 to 3 intervals;
  * ``latency`` — every request is delayed by this many seconds (a slow link);
  * ``fail_models`` — every install on these hardware models fails (a release that breaks one
    model).
"""

from __future__ import annotations

import collections
import heapq
import logging
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import fleetwarden
from fleetwarden.agent import (
    Agent,
    AgentConfig,
    DeviceClient,
    FakeInstaller,
    FileStore,
    MemoryStore,
)
from fleetwarden.errors import HealthCheckFailed
from fleetwarden.protocol.device import FirmwareComponent, HealthCheck, Inventory, Package

__all__ = ["Fleet", "SimConfig"]

log = logging.getLogger("fleetwarden.sim")

SITES = ("berlin", "paris", "madrid", "warsaw", "lyon")


@dataclass(frozen=True)
class SimConfig:
    server: str
    enroll_token: str
    devices: int = 50
    poll_interval: float = 10.0
    failure_rate: float = 0.0
    health_failure_rate: float = 0.0
    offline_rate: float = 0.0
    latency: float = 0.0
    install_duration: float = 1.0
    seed: int = 1
    workers: int = 16
    name_prefix: str = "sim"
    data_dir: Path | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)
    fail_models: frozenset[str] = frozenset()
    #: With ``fail_models``: only installs of this release (name@version) fail; None = all.
    fail_release: str | None = None
    #: Hardware models to cycle through (default: three gateway/server models).
    models: tuple[str, ...] = ("gw-100", "gw-200", "srv-10")


class _SimulatedHealth:
    def __init__(self, rate: float, rng: random.Random) -> None:
        self.rate, self.rng = rate, rng

    def check(self, checks: Sequence[HealthCheck], env: Mapping[str, str]) -> None:  # noqa: ARG002
        if self.rng.random() < self.rate:
            raise HealthCheckFailed("simulated health check failure")


class _SlowTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport, latency: float) -> None:
        self.inner, self.latency = inner, latency

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        time.sleep(self.latency)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class Fleet:
    def __init__(self, config: SimConfig, *, http: httpx.Client | None = None) -> None:
        self.config = config
        self.rng = random.Random(config.seed)  # noqa: S311 - simulation
        self._own_dir = config.data_dir is None
        self.data_dir = config.data_dir or Path(tempfile.mkdtemp(prefix="fleetwarden-sim-"))
        if http is None:
            transport: httpx.BaseTransport = httpx.HTTPTransport(
                limits=httpx.Limits(
                    max_connections=config.workers, max_keepalive_connections=config.workers
                )
            )
            if config.latency:
                transport = _SlowTransport(transport, config.latency)
            http = httpx.Client(base_url=config.server, transport=transport, timeout=30.0)
        self.http = http
        self.agents = [self._make(i) for i in range(config.devices)]
        self.offline_until = [0.0] * config.devices
        #: How late (seconds) the most recent idle poll ran: the simulator's own backlog.
        self.lag = 0.0

    def __repr__(self) -> str:
        return f"<Fleet {len(self.agents)} devices → {self.config.server}>"

    def _make(self, i: int) -> Agent:
        c = self.config
        rng = random.Random(c.seed * 1_000_003 + i)  # noqa: S311 - simulation
        name = f"{c.name_prefix}-{i:05d}"
        site, model = SITES[i % len(SITES)], c.models[(i // len(SITES)) % len(c.models)]
        canary = i < max(1, c.devices // 10)
        labels = {"sim": "true", "canary": "true" if canary else "false", **c.extra_labels}
        config = AgentConfig(
            server=c.server,
            data_dir=self.data_dir / name,
            enroll_token=c.enroll_token,
            hostname=name,
            site=site,
            zone=f"{site}-1",
            labels=labels,
            hardware_model=model,
            poll_interval=c.poll_interval,
            collect_packages=False,
            collect_firmware=False,
        )

        def inventory(installed_release: str) -> Inventory:
            return Inventory(
                hostname=name,
                os_name="debian",
                os_version="12",
                kernel="6.1.0-sim",
                arch="x86_64",
                hardware_model=model,
                agent_version=fleetwarden.__version__,
                site=site,
                zone=f"{site}-1",
                labels=labels,
                installed_release=installed_release,
                packages=[Package(name="base-files", version="12.4+deb12u5", arch="amd64")],
                firmware=[FirmwareComponent(name="System Firmware", version="1.0.3", vendor="sim")],
            )

        return Agent(
            config,
            client=DeviceClient(self.http),
            # With a data dir the virtual devices keep their identities across runs.
            store=MemoryStore() if self._own_dir else FileStore(self.data_dir / name / "state"),
            installers={
                "*": FakeInstaller(
                    failure_rate=c.failure_rate,
                    duration=c.install_duration,
                    rng=rng,
                    fails=lambda release: (
                        model in c.fail_models
                        and (c.fail_release is None or release == c.fail_release)
                    ),
                )
            },
            inventory=inventory,
            health=_SimulatedHealth(c.health_failure_rate, rng),
            rng=rng,
            reboot=lambda: None,
        )

    def _wake(self, i: int) -> float:
        now = time.monotonic()
        if now < self.offline_until[i]:
            return self.offline_until[i] - now
        if self.config.offline_rate and self.rng.random() < self.config.offline_rate:
            self.offline_until[i] = now + self.config.poll_interval * self.rng.uniform(1, 3)
            return self.offline_until[i] - now
        return self.agents[i].run_once()

    def run(self, stop: threading.Event) -> None:
        """Drive every device until ``stop`` is set. Start-up is spread over one interval.

        A device in the middle of a job (its step returned no delay) goes ahead of idle polls
        that are due: on a real fleet every device runs on its own, so one device's download
        never waits behind ten thousand other devices' polls. ``lag`` is how late the last
        idle poll ran, the sign of a simulator that cannot keep up with its fleet.
        """
        spread = min(self.config.poll_interval, 5.0)
        start = time.monotonic()
        due = [(start + spread * i / max(1, len(self.agents)), i) for i in range(len(self.agents))]
        heapq.heapify(due)
        busy: collections.deque[int] = collections.deque()
        running: dict[int, Future[float]] = {}
        with ThreadPoolExecutor(self.config.workers, thread_name_prefix="sim") as pool:
            while not stop.is_set():
                now = time.monotonic()
                for i, fut in list(running.items()):
                    if fut.done():
                        del running[i]
                        try:
                            delay = fut.result()
                        except Exception:
                            log.exception("virtual device %d crashed; restarting it", i)
                            delay = self.config.poll_interval
                        if delay <= 0:
                            busy.append(i)
                        else:
                            heapq.heappush(due, (now + delay, i))
                while len(running) < self.config.workers * 2:
                    if busy:
                        i = busy.popleft()
                    elif due and due[0][0] <= now:
                        at, i = heapq.heappop(due)
                        self.lag = now - at
                    else:
                        break
                    running[i] = pool.submit(self._wake, i)
                wait = 0.0 if busy else min([due[0][0] - now] if due else [0.05], default=0.05)
                stop.wait(max(0.005, min(wait, 0.05)))

    def close(self) -> None:
        self.http.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
