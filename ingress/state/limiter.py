"""Rate-limit decisions: a sliding-window log per key, plus calendar quotas.

Why a sliding-window log: it is exact — never more than `requests` in *any* window of
`window_s`, with no burst at window edges as fixed windows allow, and no drift as
approximate counters have — which is what "exact across nodes" asks. GCRA is smoother
and O(1) in memory, but its burst tolerance lets up to twice the limit through in the
first window of a busy key. The log costs one sorted-set entry per admitted request in
the window, so it suits limits up to some thousands per window and key.

`MemoryLimiter` is the algorithm in process (one node, or the fallback while Redis is
unreachable); `ingress/state/redis_limiter.py` runs the same decision as one Lua script.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class WindowLimit:
    requests: int
    window_ms: int


@dataclass(frozen=True, slots=True)
class QuotaLimit:
    """A calendar quota; `period` names the current day or month, e.g. `d20261204`."""

    name: str
    requests: int
    period: str
    ttl_ms: int


@dataclass(slots=True)
class Decision:
    allowed: bool
    retry_after_ms: int = 0
    # Per window limit, then per quota: (used before this request, ms until it frees up).
    usage: list[tuple[int, int]] = field(default_factory=list)


def current_quotas(
    daily: int | None, monthly: int | None, now: datetime | None = None
) -> tuple[QuotaLimit, ...]:
    """The quota periods in force now (UTC), with the time left in each."""
    now = now or datetime.now(UTC)
    quotas = []
    if daily is not None:
        tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        left = int((tomorrow - now).total_seconds() * 1000)
        quotas.append(QuotaLimit("daily", daily, now.strftime("d%Y%m%d"), left))
    if monthly is not None:
        first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (first + timedelta(days=32)).replace(day=1)
        left = int((following - now).total_seconds() * 1000)
        quotas.append(QuotaLimit("monthly", monthly, now.strftime("m%Y%m"), left))
    return tuple(quotas)


class MemoryLimiter:
    """The decision in process. Keys that fall idle are swept now and then."""

    SWEEP_EVERY = 10_000

    def __init__(self) -> None:
        self._logs: dict[str, deque[int]] = {}
        self._quotas: dict[str, tuple[int, float]] = {}  # key -> (used, expires at, s)
        self._hits = 0

    def __len__(self) -> int:
        return len(self._logs) + len(self._quotas)

    def hit(
        self, key: str, limits: tuple[WindowLimit, ...], quotas: tuple[QuotaLimit, ...]
    ) -> Decision:
        now = time.monotonic_ns() // 1_000_000
        wall = time.time()
        self._hits += 1
        if self._hits % self.SWEEP_EVERY == 0:
            self._sweep(now, wall, max((lim.window_ms for lim in limits), default=0))
        decision = Decision(True)
        logs = []
        for i, limit in enumerate(limits):
            log = self._logs.setdefault(f"{key}|{i}|{limit.window_ms}", deque())
            while log and log[0] <= now - limit.window_ms:
                log.popleft()
            count = len(log)
            reset = log[0] + limit.window_ms - now if log else limit.window_ms
            if count >= limit.requests:
                decision.allowed = False
                frees = log[count - limit.requests] + limit.window_ms - now
                decision.retry_after_ms = max(decision.retry_after_ms, frees)
            decision.usage.append((count, reset))
            logs.append(log)
        counters = []
        for quota in quotas:
            qkey = f"{key}|{quota.period}"
            used, expires = self._quotas.get(qkey, (0, 0.0))
            if expires <= wall:
                used = 0
            if used >= quota.requests:
                decision.allowed = False
                decision.retry_after_ms = max(decision.retry_after_ms, quota.ttl_ms)
            decision.usage.append((used, quota.ttl_ms))
            counters.append((qkey, used, wall + quota.ttl_ms / 1000))
        if decision.allowed:
            for log in logs:
                log.append(now)
            for qkey, used, expires in counters:
                self._quotas[qkey] = (used + 1, expires)
        return decision

    def _sweep(self, now: int, wall: float, longest_ms: int) -> None:
        for key in [k for k, log in self._logs.items() if not log or log[-1] <= now - longest_ms]:
            del self._logs[key]
        for key in [k for k, (_, expires) in self._quotas.items() if expires <= wall]:
            del self._quotas[key]
