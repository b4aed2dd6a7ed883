"""Health of upstream instances: `Instance` (its state), `OutlierDetector` (passive:
ejects an instance after consecutive failed requests, readmits it after `eject_ms`) and
`HealthChecker` (active: `GET path` on each instance every interval; thresholds of
passes and failures in a row move it in and out of rotation)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from contracts.config import HealthCheck, OutlierDetection, redact_url
from workers.routing.background import BackgroundLoop
from workers.routing.window import Clock

log = logging.getLogger("relaygate.routing.health")


@dataclass(eq=False, slots=True)
class Instance:
    """One server of an upstream and what the routing worker knows about it."""

    url: str
    group: int = 0
    weight: int = 1  # share of its group's requests, relative to the others
    outstanding: int = 0  # requests in flight to it now
    healthy: bool = True  # the active checks' verdict; True when there are none
    ejected_until: float = 0.0  # monotonic time; passive ejection lasts until then
    ejections: int = 0
    failures_in_row: int = 0  # observed on requests
    checks_in_row: int = 0  # active checks: passes in a row (> 0) or failures (< 0)

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "url": redact_url(self.url),  # the admin API shows it: no credentials
            "group": self.group,
            "weight": self.weight,
            "available": self.available(now),
            "healthy": self.healthy,
            "ejected": now < self.ejected_until,
            "ejections": self.ejections,
            "outstanding": self.outstanding,
        }


class OutlierDetector:
    """Passive health: fed the outcome of every request to an instance."""

    __slots__ = ("_clock", "_eject_s", "_limit", "_upstream")

    def __init__(
        self, upstream: str, options: OutlierDetection, clock: Clock = time.monotonic
    ) -> None:
        self._upstream = upstream
        self._limit = options.consecutive_failures
        self._eject_s = options.eject_ms / 1000
        self._clock = clock

    def observe(self, instance: Instance, failed: bool) -> None:
        if not failed:
            instance.failures_in_row = 0
            return
        instance.failures_in_row += 1
        if instance.failures_in_row >= self._limit:
            instance.failures_in_row = 0
            instance.ejected_until = self._clock() + self._eject_s
            instance.ejections += 1
            log.warning(
                "upstream %s: ejected %s for %.1f s after %d failures in a row",
                self._upstream,
                instance.url,
                self._eject_s,
                self._limit,
            )


class HealthChecker(BackgroundLoop):
    """Active health: one task per upstream probing all its instances each interval.
    `instances` is replaced (not changed in place) when discovery changes the set."""

    def __init__(
        self,
        upstream: str,
        instances: list[Instance],
        options: HealthCheck,
        session: aiohttp.ClientSession,
    ) -> None:
        self._upstream = upstream
        self.instances = instances
        self._options = options
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=options.timeout_ms / 1000)

    async def _run(self) -> None:
        interval = self._options.interval_ms / 1000
        while True:
            await asyncio.gather(*(self._check(i) for i in self.instances))
            await asyncio.sleep(interval)

    async def _check(self, instance: Instance) -> None:
        try:
            async with self._session.get(
                instance.url + self._options.path,
                allow_redirects=False,
                timeout=self._timeout,
            ) as reply:
                passed = reply.status < 400
        except (aiohttp.ClientError, TimeoutError):
            passed = False
        self._count(instance, passed)

    def _count(self, instance: Instance, passed: bool) -> None:
        if passed:
            instance.checks_in_row = max(instance.checks_in_row, 0) + 1
            if not instance.healthy and instance.checks_in_row >= self._options.healthy_threshold:
                instance.healthy = True
                log.info("upstream %s: %s is healthy again", self._upstream, instance.url)
        else:
            instance.checks_in_row = min(instance.checks_in_row, 0) - 1
            if instance.healthy and -instance.checks_in_row >= self._options.unhealthy_threshold:
                instance.healthy = False
                log.warning(
                    "upstream %s: %s failed its health checks", self._upstream, instance.url
                )
