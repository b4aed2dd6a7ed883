"""Prometheus metrics. The hot path only touches pre-bound, lock-free children
(`RouteMeters`, one per route; see families.py); counts the code keeps anyway (ingress
stats, pending replies, breaker state) are read at scrape time by collectors, at no
cost per request.

    meters = MeterCache(route.name for route in config.routes)
    meters.route("orders").done(200, 0.0042)
    body, content_type = exposition(registry_with(BusCollector(bus.pending)))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from contracts.telemetry.families import Counter, Histogram

log = logging.getLogger("relaygate.telemetry")

NO_ROUTE = "(none)"
# Seconds: from a cache hit (well under 1 ms) to a slow upstream.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip

HTTP_REQUESTS = Counter(
    "relaygate_http_requests", "Requests the ingress answered, by route and status.",
    ["route", "status"],
)  # fmt: skip
HTTP_DURATION = Histogram(
    "relaygate_http_request_duration_seconds",
    "Time from the request's head to the end of the response, at the ingress.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
CACHE_LOOKUPS = Counter(
    "relaygate_cache_lookups", "Response-cache outcomes (hit, stale, miss) by route.",
    ["route", "outcome"],
)  # fmt: skip
RATE_LIMIT_DECISIONS = Counter(
    "relaygate_ratelimit_decisions", "Rate-limit outcomes (allowed, limited) by route.",
    ["route", "outcome"],
)  # fmt: skip
BUS_REQUEST = Histogram(
    "relaygate_bus_request_duration_seconds",
    "Bus request to reply, by request topic.",
    ["topic"],
    buckets=LATENCY_BUCKETS,
)
BUS_PUBLISH = Histogram(
    "relaygate_bus_publish_duration_seconds",
    "Time to hand a message to the bus, by kind (request, reply).",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
WORKER_REQUESTS = Counter(
    "relaygate_worker_requests", "Requests a worker answered, by route and status.",
    ["route", "status"],
)  # fmt: skip
WORKER_DURATION = Histogram(
    "relaygate_worker_request_duration_seconds",
    "Handler time in a worker, by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
WORKER_QUEUE_DELAY = Histogram(
    "relaygate_worker_queue_delay_seconds",
    "From the ingress's envelope to the worker's start (bus transit and consumer lag), "
    "1 ms resolution.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
WORKER_DROPPED = Counter(
    "relaygate_worker_dropped", "Messages a worker dropped (expired, undecodable).", ["reason"]
)


class InFlight:
    """A count of work in progress: a plain int on the hot path, a gauge at scrape time."""

    __slots__ = ("count", "documentation", "name")

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.count = 0


HTTP_IN_FLIGHT = InFlight("relaygate_http_in_flight", "Requests the ingress is serving now.")
WORKER_IN_FLIGHT = InFlight("relaygate_worker_in_flight", "Requests a worker is handling now.")


class RouteMeters:
    """A route's children, bound once; status and outcome children on first use."""

    __slots__ = ("_outcomes", "_requests", "_statuses", "duration", "route")

    def __init__(
        self, route: str, requests: Counter = HTTP_REQUESTS, duration: Histogram = HTTP_DURATION
    ) -> None:
        self.route = route
        self._requests = requests
        self._statuses: dict[int, Any] = {}
        self._outcomes: dict[tuple[Counter, str], Any] = {}
        self.duration = duration.labels(route)

    def done(self, status: int, seconds: float) -> None:
        child = self._statuses.get(status)
        if child is None:
            child = self._statuses[status] = self._requests.labels(self.route, str(status))
        child.inc()
        self.duration.observe(seconds)

    def outcome(self, counter: Counter, outcome: str) -> None:
        """Count a cache (`CACHE_LOOKUPS`) or rate-limit (`RATE_LIMIT_DECISIONS`) outcome."""
        key = (counter, outcome)
        child = self._outcomes.get(key)
        if child is None:
            child = self._outcomes[key] = counter.labels(self.route, outcome)
        child.inc()


class MeterCache:
    """route name -> its `RouteMeters`, made on first use (routes come and go with reloads)."""

    __slots__ = ("_duration", "_meters", "_requests")

    def __init__(
        self,
        routes: Iterable[str] = (),
        requests: Counter = HTTP_REQUESTS,
        duration: Histogram = HTTP_DURATION,
    ) -> None:
        self._requests = requests
        self._duration = duration
        self._meters: dict[str, RouteMeters] = {}
        for name in routes:
            self.route(name)

    def route(self, name: str | None) -> RouteMeters:
        key = name or NO_ROUTE
        meters = self._meters.get(key)
        if meters is None:
            meters = self._meters[key] = RouteMeters(key, self._requests, self._duration)
        return meters


class InFlightCollector(Collector):
    def __init__(self, in_flight: InFlight) -> None:
        self._in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        it = self._in_flight
        yield GaugeMetricFamily(it.name, it.documentation, value=it.count)


class _Pending(Protocol):
    late: int

    def __len__(self) -> int: ...


class BusCollector(Collector):
    """Pending and late replies of one bus connection, read at scrape time."""

    def __init__(self, pending: _Pending) -> None:
        self._pending = pending

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "relaygate_bus_pending_replies", "Requests waiting for their reply.",
            value=len(self._pending),
        )  # fmt: skip
        yield CounterMetricFamily(
            "relaygate_bus_late_replies",
            "Replies that arrived after their requester gave up.",
            value=self._pending.late,
        )


class StatsCollector(Collector):
    """Counters the code keeps anyway (like `IngressStats`) as one labelled counter;
    `stats()` returns event -> count."""

    def __init__(self, name: str, documentation: str, stats: Callable[[], Mapping[str, int]]):
        self._name = name
        self._doc = documentation
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=["event"])
        for event, count in self._stats().items():
            family.add_metric([event], count)
        yield family


_BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class UpstreamCollector(Collector):
    """The routing worker's per-upstream state: breaker and instances, at scrape time.
    `snapshots()` returns upstream name -> `UpstreamPool.snapshot()`."""

    def __init__(self, snapshots: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "relaygate_upstream_breaker_state",
            "Circuit breaker per upstream: 0 closed, 1 half open, 2 open.",
            labels=["upstream"],
        )
        opened = CounterMetricFamily(
            "relaygate_upstream_breaker_opened", "Times the breaker opened.", labels=["upstream"]
        )
        available = GaugeMetricFamily(
            "relaygate_upstream_instance_available",
            "1 when the instance takes requests (healthy, not ejected).",
            labels=["upstream", "instance"],
        )
        outstanding = GaugeMetricFamily(
            "relaygate_upstream_instance_outstanding",
            "Requests in flight to the instance.",
            labels=["upstream", "instance"],
        )
        for name, snapshot in self._snapshots().items():
            breaker = snapshot["breaker"]
            state.add_metric([name], _BREAKER_STATES.get(breaker["state"], -1))
            opened.add_metric([name], breaker["opened"])
            for instance in snapshot["instances"]:
                available.add_metric([name, instance["url"]], 1 if instance["available"] else 0)
                outstanding.add_metric([name, instance["url"]], instance["outstanding"])
        yield from (state, opened, available, outstanding)


class _Combined(Collector):
    def __init__(self, collectors: Iterable[Collector]) -> None:
        self._collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def registry_with(*collectors: Collector) -> CollectorRegistry:
    """The process's metrics plus `collectors`, as one registry to expose."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Combined([REGISTRY, *collectors]))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus text format of `registry`, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> tuple[Any, int]:
    """A small HTTP listener (its own thread) serving `/metrics`: for processes without
    an admin API. Returns the server (call `.shutdown()`) and the port it bound."""
    server, _thread = start_http_server(port, host, registry)
    bound: int = server.server_port
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return server, bound
