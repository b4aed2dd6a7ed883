"""`UpstreamPool`: everything the routing worker keeps per upstream, shared by the routes
that use it: the HTTP session, the instances and their health, the balancer, the circuit
breaker and the retry budget. Its `snapshot()` is what the admin API shows."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from contracts.config import HttpUpstream
from contracts.envelope import HttpInfo
from workers.routing.balancer import make_balancer
from workers.routing.breaker import CircuitBreaker
from workers.routing.failover import RetryBudget, candidates
from workers.routing.headers import client_ip
from workers.routing.health import HealthChecker, Instance, OutlierDetector
from workers.routing.window import Clock


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
        self.instances = [Instance(t.url, t.group) for t in options.instances()]
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

    def start(self) -> None:
        """Start the active health checks, if configured; needs a running loop."""
        if self._checker is not None:
            self._checker.start()

    async def close(self) -> None:
        if self._checker is not None:
            await self._checker.close()
        await self.session.close()

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
        }
