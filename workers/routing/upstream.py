"""`UpstreamPool`: everything the routing worker keeps per upstream, shared by the routes
that use it: the HTTP session, the instances and their health, the balancer, the circuit
breaker and the retry budget. Its `snapshot()` is what the admin API shows.

The instance set comes from the config, or from a discovery source at run time
(`set_instances`): the list is replaced, never changed in place, so a request that is
choosing an instance sees one consistent set; instances that stay are the same objects,
with their health, ejection and requests in flight."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from contracts.bus import Bus
from contracts.config import HttpUpstream, UpstreamInstance
from contracts.envelope import HttpInfo
from workers.routing.balancer import make_balancer
from workers.routing.breaker import CircuitBreaker
from workers.routing.discovery import DiscoveryLoop, DiscoveryUnavailable, make_source
from workers.routing.failover import RetryBudget, candidates
from workers.routing.headers import client_ip
from workers.routing.health import HealthChecker, Instance, OutlierDetector
from workers.routing.window import Clock

log = logging.getLogger("relaygate.routing")


class UpstreamPool:
    def __init__(
        self,
        name: str,
        options: HttpUpstream,
        session: aiohttp.ClientSession,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.options = options
        self.session = session
        self.instances = [Instance(t.url, t.group, t.weight) for t in options.instances()]
        # Bumped on every change of the instance set: proxies rebuild their URL tables.
        self.generation = 0
        self.breaker = CircuitBreaker(options.breaker, clock)
        self.outlier = OutlierDetector(name, options.outlier, clock)
        self.budget = RetryBudget(options.retries, clock)
        self._balancer = make_balancer(options.balance, self.instances)
        self._hashed = options.balance == "consistent_hash"
        self._hash_header = options.hash_key.lower() if options.hash_key else None
        self._clock = clock
        self._checker = (
            HealthChecker(name, self.instances, options.health, session)
            if options.health is not None
            else None
        )
        self._discovery: DiscoveryLoop | None = None

    def start(self, bus: Bus | None = None) -> None:
        """Start the active health checks and the discovery, if configured; needs a
        running loop. Bus discovery reads the announcements on `bus`."""
        if self._checker is not None:
            self._checker.start()
        if self.options.discovery is not None and self._discovery is None:
            try:
                source = make_source(self.name, self.options.discovery, bus)
            except DiscoveryUnavailable as exc:
                log.error("upstream %s: no discovery: %s", self.name, exc)
                return
            if source is not None:
                self._discovery = DiscoveryLoop(self.name, source, self.set_instances)
                self._discovery.start()

    async def close(self) -> None:
        if self._discovery is not None:
            await self._discovery.close()
        if self._checker is not None:
            await self._checker.close()
        await self.session.close()

    def known_instances(self) -> list[UpstreamInstance]:
        """The current instance set, as discovery would give it."""
        return [UpstreamInstance(url=i.url, group=i.group, weight=i.weight) for i in self.instances]

    def set_instances(self, found: Sequence[UpstreamInstance]) -> None:
        """Make `found` the instance set (a URL listed twice counts once)."""
        current = {instance.url: instance for instance in self.instances}
        fresh: dict[str, Instance] = {}
        changed = len(found) != len(self.instances)
        for target in found:
            if target.url in fresh:
                continue
            instance = current.get(target.url)
            if instance is None:
                instance = Instance(target.url, target.group, target.weight)
                changed = True
            elif instance.group != target.group or instance.weight != target.weight:
                instance.group, instance.weight = target.group, target.weight
                changed = True
            fresh[target.url] = instance
        if not changed and list(fresh) == list(current):
            return
        instances = list(fresh.values())
        added = len(fresh.keys() - current.keys())
        removed = len(current.keys() - fresh.keys())
        self._balancer = make_balancer(self.options.balance, instances)
        self.instances = instances
        self.generation += 1
        if self._checker is not None:
            self._checker.instances = instances
        log.info(
            "upstream %s: %d instance(s) (%d added, %d removed)",
            self.name,
            len(instances),
            added,
            removed,
        )

    def choose(self, http: HttpInfo, tried: list[Instance]) -> Instance | None:
        """The instance for this attempt; None when no instance is available."""
        group = candidates(self.instances, self._clock(), tried)
        if not group:
            return None
        if len(group) == 1:
            return group[0]
        key = ""
        if self._hashed:
            # Without the header, the client address: one key for all would pin one instance.
            header = http.header(self._hash_header) if self._hash_header else None
            key = header or client_ip(http.client)
        return self._balancer.pick(group, key)

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "balance": self.options.balance,
            "breaker": self.breaker.snapshot(),
            "instances": [instance.snapshot(now) for instance in self.instances],
            "discovery": self._discovery.snapshot() if self._discovery is not None else None,
        }
