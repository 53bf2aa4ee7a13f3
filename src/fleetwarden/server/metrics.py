"""Prometheus metrics, on a registry owned by the app (never the global default registry,
so two apps in one process — tests, the demo — do not collide)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CertificateExpiryCollector", "FleetCollector", "Metrics", "RequestMetricsMiddleware"]

FleetSnapshot = tuple[dict[str, int], dict[str, int]]  # device states, assignment states


class FleetCollector(Collector):
    """Device and assignment gauges computed from the database at scrape time, cached briefly
    so that several scrapers do not each trigger a full count."""

    def __init__(self, snapshot: Callable[[], FleetSnapshot], ttl: float = 5.0) -> None:
        self._snapshot = snapshot
        self._ttl = ttl
        self._cached: tuple[float, FleetSnapshot] | None = None

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self._ttl:
            self._cached = (now, self._snapshot())
        devices, assignments = self._cached[1]
        g = GaugeMetricFamily("fleetwarden_devices", "Devices by state", labels=["state"])
        for state, n in devices.items():
            g.add_metric([state], n)
        yield g
        a = GaugeMetricFamily(
            "fleetwarden_assignments",
            "Latest assignment of each device, by state",
            labels=["state"],
        )
        for state, n in assignments.items():
            a.add_metric([state], n)
        yield a


class CertificateExpiryCollector(Collector):
    """``fleetwarden_device_certificates{state}``: active devices' current certificates by
    time to expiry (``core.certificates.ExpiryState``), computed at scrape and kept for
    ``ttl`` seconds of the server's clock, so several scrapers cost one aggregate query."""

    def __init__(
        self, counts: Callable[[], dict[str, int]], clock: Callable[[], datetime], ttl: float = 5.0
    ) -> None:
        self._counts = counts
        self._clock = clock
        self._ttl = timedelta(seconds=ttl)
        self._cached: tuple[datetime, dict[str, int]] | None = None

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        if self._cached is None or not (self._cached[0] <= now < self._cached[0] + self._ttl):
            self._cached = (now, self._counts())
        g = GaugeMetricFamily(
            "fleetwarden_device_certificates",
            "Current certificates of active devices by time to expiry",
            labels=["state"],
        )
        for state, n in self._cached[1].items():
            g.add_metric([state], n)
        yield g


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fleetwarden_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.polls = Counter(
            "fleetwarden_device_polls",
            "Device polls by answer (200 or 304)",
            ["result"],
            registry=self.registry,
        )
        self.enrollments = Counter(
            "fleetwarden_enrollments",
            "Enrollment attempts by result",
            ["result"],
            registry=self.registry,
        )
        self._poll_children: dict[str, Any] = {}

    def count_poll(self, result: str) -> None:
        """``polls.labels(result).inc()``, resolving each labelled child once (hot path)."""
        child = self._poll_children.get(result)
        if child is None:
            child = self._poll_children[result] = self.polls.labels(result)
        child.inc()

    def attach_fleet(self, snapshot: Callable[[], FleetSnapshot]) -> None:
        self.registry.register(FleetCollector(snapshot))

    def attach_certificates(
        self, counts: Callable[[], dict[str, int]], clock: Callable[[], datetime]
    ) -> None:
        self.registry.register(CertificateExpiryCollector(counts, clock))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts requests per route template (not per raw path, which would explode label
    cardinality with device ids)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Resolving a labelled child takes a lock and a validation on every call, so each is
        # resolved once (the counter keeps every child it ever made anyway).
        self._children: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def _send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            key = (scope["method"], getattr(scope.get("route"), "path", "unmatched"), status)
            child = self._children.get(key)
            if child is None:
                child = self.metrics.requests.labels(key[0], key[1], str(status))
                self._children[key] = child
            child.inc()
