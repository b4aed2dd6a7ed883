"""Ordered failover and retries: requests go to the available instances of the lowest
group that has any (primary, then backups); a failed attempt is tried again, on another
instance when there is one, only for idempotent requests and within a retry budget."""

from __future__ import annotations

import time
from collections.abc import Collection

from contracts.config import RetryPolicy
from contracts.envelope import HttpInfo
from workers.routing.health import Instance
from workers.routing.window import Clock, SlidingCounts

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
BUDGET_WINDOW_S = 10.0


def may_retry(http: HttpInfo) -> bool:
    """RFC 9110 idempotent methods, or a request the client made safe to repeat."""
    return http.method in IDEMPOTENT_METHODS or http.header("idempotency-key") is not None


def candidates(
    instances: list[Instance], now: float, tried: Collection[Instance] = ()
) -> list[Instance]:
    """The available instances of the lowest group that has any, preferring those not
    tried yet for this request; empty when no instance is available at all."""
    for exclude in (tried, ()):
        best: list[Instance] = []
        for instance in instances:
            if instance in exclude or not instance.available(now):
                continue
            if not best or instance.group < best[0].group:
                best = [instance]
            elif instance.group == best[0].group:
                best.append(instance)
        if best:
            return best
    return []


class RetryBudget:
    """Retries may add at most `budget_ratio` times the requests of the last ten seconds,
    and `min_retries` whatever the traffic: retries never multiply an overload."""

    __slots__ = ("_min", "_ratio", "_requests", "_retries")

    def __init__(self, policy: RetryPolicy, clock: Clock = time.monotonic) -> None:
        self._ratio = policy.budget_ratio
        self._min = policy.min_retries
        self._requests = SlidingCounts(BUDGET_WINDOW_S, clock)
        self._retries = SlidingCounts(BUDGET_WINDOW_S, clock)

    def request(self) -> None:
        self._requests.add()

    def try_retry(self) -> bool:
        """Spend one retry if the budget has one left."""
        allowed = max(self._min, self._ratio * self._requests.calls())
        if self._retries.calls() >= allowed:
            return False
        self._retries.add()
        return True
