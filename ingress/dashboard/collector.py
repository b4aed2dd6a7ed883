"""What the dashboard shows: every `interval_s` it reads this process's metric families
(the ones `/metrics` exposes) and turns the deltas since the last sample into rates and
latency percentiles, per route and in total; a bounded history of those samples is what
a browser gets when it connects. Nothing here runs per request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from prometheus_client import REGISTRY
from prometheus_client.core import Metric

from contracts.telemetry.metrics import HTTP_IN_FLIGHT

log = logging.getLogger("relaygate.admin")

REQUESTS = "relaygate_http_requests"
DURATION = "relaygate_http_request_duration_seconds"
BUS_REQUEST = "relaygate_bus_request_duration_seconds"
# Counters of the webhook bridge, when one runs in this process: shown only if present.
WEBHOOK_PREFIX = "relaygate_webhook_"
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


class _Source(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class _Pending(Protocol):
    late: int

    def __len__(self) -> int: ...


def quantile(q: float, bounds: list[float], cumulative: list[float]) -> float | None:
    """Like Prometheus's `histogram_quantile`: the bucket holding rank q, linear inside
    it; the highest finite bound when it falls in +Inf; None without observations."""
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return None
    rank = q * total
    for i, count in enumerate(cumulative):
        if count >= rank:
            if math.isinf(bounds[i]):
                return bounds[i - 1] if i > 0 else None
            lower = bounds[i - 1] if i > 0 else 0.0
            below = cumulative[i - 1] if i > 0 else 0.0
            inside = count - below
            return (
                bounds[i] if inside <= 0 else lower + (bounds[i] - lower) * (rank - below) / inside
            )
    return None


@dataclass(slots=True)
class _Reading:
    """One pass over the families: raw cumulative values."""

    at: float
    requests: dict[tuple[str, str], float] = field(default_factory=dict)  # (route, status)
    buckets: dict[str, list[float]] = field(default_factory=dict)  # route -> cumulative
    bounds: list[float] = field(default_factory=list)
    bus: list[float] = field(default_factory=list)  # all topics, cumulative
    bus_bounds: list[float] = field(default_factory=list)
    late: int = 0
    events: dict[str, int] = field(default_factory=dict)
    webhooks: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)


def _read(source: _Source, at: float, stats: Mapping[str, int], late: int) -> _Reading:
    reading = _Reading(at, late=late, events=dict(stats))
    for family in source.collect():
        name = family.name
        if name == REQUESTS:
            for s in family.samples:
                if s.name.endswith("_total"):
                    key = (s.labels["route"], s.labels["status"])
                    reading.requests[key] = s.value
        elif name == DURATION:
            reading.bounds = _histogram(family, reading.buckets, "route")
        elif name == BUS_REQUEST:
            per_topic: dict[str, list[float]] = {}
            reading.bus_bounds = _histogram(family, per_topic, "topic")
            reading.bus = _summed(per_topic.values(), len(reading.bus_bounds))
        elif name.startswith(WEBHOOK_PREFIX) and family.type == "counter":
            for s in family.samples:
                if s.name.endswith("_total"):
                    reading.webhooks[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return reading


def _histogram(family: Metric, into: dict[str, list[float]], label: str) -> list[float]:
    """Cumulative bucket counts per `label` value (in `le` order); returns the bounds."""
    bounds: list[float] = []
    for s in family.samples:
        if s.name.endswith("_bucket"):
            key = s.labels[label]
            counts = into.setdefault(key, [])
            if len(counts) == len(bounds):
                bounds.append(float(s.labels["le"]))
            counts.append(s.value)
    return bounds


def _summed(series: Iterable[list[float]], size: int) -> list[float]:
    total = [0.0] * size
    for counts in series:
        for i, value in enumerate(counts[:size]):
            total[i] += value
    return total


def _delta(now: list[float], before: list[float] | None) -> list[float]:
    if before is None or len(before) != len(now):
        return list(now)
    return [max(0.0, a - b) for a, b in zip(now, before, strict=True)]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _traffic(
    counts: Mapping[str, float], buckets: list[float], bounds: list[float], dt: float
) -> dict[str, Any]:
    """Rates (per second) and latency percentiles (ms) of one interval."""
    total = counts.get("all", 0.0)
    point: dict[str, Any] = {
        "rps": round(total / dt, 3),
        "e4": round(counts.get("4xx", 0.0) / dt, 3),
        "e5": round(counts.get("5xx", 0.0) / dt, 3),
    }
    for key, q in QUANTILES:
        point[key] = _ms(quantile(q, bounds, buckets)) if bounds else None
    return point


class DashboardCollector:
    """Samples every `interval_s`; keeps `history_s` worth of points (bounded)."""

    def __init__(
        self,
        *,
        node_id: str,
        pending: _Pending,
        stats: Callable[[], Mapping[str, int]],
        workers: Callable[[], list[dict[str, Any]]],
        nodes: Callable[[], list[dict[str, Any]]] = list,
        on_point: Callable[[dict[str, Any]], None] | None = None,
        interval_s: float = 1.0,
        history_s: int = 300,
        source: _Source = REGISTRY,
    ) -> None:
        self.node_id = node_id
        self.interval_s = interval_s
        self._pending = pending
        self._stats = stats
        self._workers = workers
        self._nodes = nodes
        self._on_point = on_point
        self._source = source
        self.history: deque[dict[str, Any]] = deque(maxlen=max(1, int(history_s / interval_s)))
        self.state: dict[str, Any] = {}  # the latest non-numeric part: workers, events, …
        self._last: _Reading | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self.sample()  # the baseline the first deltas are taken from
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                self.sample()
            except Exception:  # a bad sample must not end the dashboard
                log.exception("dashboard sample failed")

    def sample(self) -> dict[str, Any] | None:
        """Read the families now; the new point (None for the first reading)."""
        reading = _read(self._source, time.monotonic(), self._stats(), self._pending.late)
        last, self._last = self._last, reading
        if last is None:
            self.state = self._state(reading, None, 1.0)
            return None
        dt = max(reading.at - last.at, 1e-3)
        point = self._point(reading, last, dt)
        if self._on_point is not None:
            self._on_point(point)
        self.state = self._state(reading, last, dt)
        self.history.append(point)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return point

    def _point(self, now: _Reading, last: _Reading, dt: float) -> dict[str, Any]:
        counts: dict[str, dict[str, float]] = {}
        for (route, status), value in now.requests.items():
            delta = value - last.requests.get((route, status), 0.0)
            if delta <= 0:
                continue
            for name in (route, "\0all"):
                per = counts.setdefault(name, {})
                per["all"] = per.get("all", 0.0) + delta
                if status[:1] in ("4", "5"):
                    per[status[0] + "xx"] = per.get(status[0] + "xx", 0.0) + delta
        deltas = {r: _delta(c, last.buckets.get(r)) for r, c in now.buckets.items()}
        routes = {
            route: _traffic(counts[route], deltas.get(route, []), now.bounds, dt)
            for route in sorted(counts)
            if route != "\0all"
        }
        overall = _summed(deltas.values(), len(now.bounds))
        bus = _delta(now.bus, last.bus) if now.bus else []
        return {
            "t": int(time.time() * 1000),
            "total": _traffic(counts.get("\0all", {}), overall, now.bounds, dt),
            "routes": routes,
            "bus": {
                "pending": len(self._pending),
                "in_flight": HTTP_IN_FLIGHT.count,
                "late": round(max(0, now.late - last.late) / dt, 3),
                "p50": _ms(quantile(0.5, now.bus_bounds, bus)) if bus else None,
                "p99": _ms(quantile(0.99, now.bus_bounds, bus)) if bus else None,
            },
        }

    def _state(self, now: _Reading, last: _Reading | None, dt: float) -> dict[str, Any]:
        before = last.events if last is not None else now.events
        events = {
            name: {"total": count, "per_s": round((count - before.get(name, count)) / dt, 3)}
            for name, count in now.events.items()
        }
        webhooks = []
        for (name, labels), value in sorted(now.webhooks.items()):
            was = last.webhooks.get((name, labels), value) if last is not None else value
            webhooks.append(
                {"name": name, "labels": dict(labels), "total": value,
                 "per_s": round((value - was) / dt, 3)}
            )  # fmt: skip
        return {
            "node": self.node_id,
            "routes": sorted({route for route, _ in now.requests} | set(now.buckets)),
            "late_total": now.late,
            "events": events,
            "workers": self._workers(),
            "nodes": self._nodes(),
            "webhooks": webhooks,
        }

    async def stream(self, closing: Callable[[], bool] = lambda: False) -> AsyncIterator[bytes]:
        """Server-sent events: `history` once, then `sample` (a point plus the state)
        each time one is taken, until `closing()` says the server is stopping."""
        yield _event(
            "history",
            {
                "interval_s": self.interval_s,
                "capacity": self.history.maxlen,
                "points": list(self.history),
                "state": self.state,
            },
        )
        while not closing():
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), self.interval_s + 5.0)
            except TimeoutError:
                yield b": no sample\n\n"  # a comment: keeps proxies from closing the stream
                continue
            if not closing():
                point = self.history[-1] if self.history else {}
                yield _event("sample", {"point": point, "state": self.state})


def _event(name: str, data: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
