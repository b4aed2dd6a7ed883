"""Admission control at the ingress: a request-rate cap per client address (a token
bucket), and a limit on requests in flight with a short priority queue. Past the queue,
or after waiting `queue_timeout_ms`, a request is shed at once with 503 + Retry-After,
so that admitted requests keep a bounded latency under any load.

Tiers with a higher `priority` are served first from the queue, may take the
`reserved` slots, and displace the newest queued request of a lower tier when the
queue is full."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import math
import time
from collections import deque

from contracts.config import AdmissionConfig, PerClientRate, Tier
from ingress.request import Refused


class ClientRates:
    """A token bucket per client address (per /64 for IPv6, which one host may own
    whole), bounded in memory: past `max_clients`, full buckets (idle clients) are
    forgotten, then the oldest half if that is not enough."""

    def __init__(self, options: PerClientRate) -> None:
        self.rate = options.rate
        self.burst = float(options.burst)
        self.max_clients = options.max_clients
        self.buckets: dict[str, list[float]] = {}  # address -> [tokens, last refill]

    def take(self, client: str, now: float) -> float:
        """0 when a request of `client` may pass, else the seconds until it may."""
        if ":" in client:
            client = _ipv6_prefix(client)
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= self.max_clients:
                self._forget(now)
            self.buckets[client] = [self.burst - 1, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return 0.0
        bucket[0] = tokens
        return (1 - tokens) / self.rate

    def _forget(self, now: float) -> None:
        buckets = self.buckets
        full = [
            k
            for k, (tokens, at) in buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for key in full:
            del buckets[key]
        if len(buckets) >= self.max_clients:
            for key in list(itertools.islice(buckets, len(buckets) // 2 + 1)):
                del buckets[key]


def _ipv6_prefix(client: str) -> str:
    try:
        return f"{int(ipaddress.IPv6Address(client)) >> 64:x}::/64"
    except ValueError:
        return client


class Admission:
    def __init__(
        self, options: AdmissionConfig, tiers: dict[str, Tier], retry_after: bytes
    ) -> None:
        self.limit = options.max_concurrency or 0  # 0: no limit, only the per-client rate
        self.base_limit = self.limit - options.reserved  # what priority 0 may fill
        self.max_queue = options.max_queue
        self.timeout_s = options.queue_timeout_ms / 1000
        self.priorities = {name: tier.priority for name, tier in tiers.items() if tier.priority}
        # What it was built from: a reload with the same keeps the running instance.
        self.settings = (options, sorted(self.priorities.items()), retry_after)
        levels = sorted({0, *self.priorities.values()}, reverse=True)
        self.queues = [(level, deque[asyncio.Future[bool]]()) for level in levels]
        self.queue_of = dict(self.queues)
        self.rates = ClientRates(options.per_client) if options.per_client else None
        self.retry_after = retry_after
        self.in_flight = 0
        self.queued = 0

    async def enter(self, client: str, tier: str | None) -> None:
        """Return once admitted (then call `leave`), or raise `Refused` (429 or 503)."""
        if self.rates is not None:
            wait = self.rates.take(client, time.monotonic())
            if wait:
                seconds = str(max(1, math.ceil(wait)))
                raise Refused(
                    429,
                    "client-rate-exceeded",
                    "Too many requests",
                    f"client address {client} is over its request rate; retry in {seconds} s",
                    [(b"retry-after", seconds.encode())],
                )
        if not self.limit:
            return
        priority = self.priorities.get(tier, 0) if tier else 0
        if self.in_flight < (self.limit if priority else self.base_limit):
            self.in_flight += 1
            return
        await self._wait(priority)

    def leave(self) -> None:
        if not self.limit:
            return
        self.in_flight -= 1
        if self.queued:
            self._hand_over()

    def _hand_over(self) -> None:
        """Give free slots to the waiters that may take them, highest priority first."""
        for level, waiters in self.queues:
            while waiters:
                if self.in_flight >= (self.limit if level else self.base_limit):
                    break
                self.queued -= 1
                self.in_flight += 1
                waiters.popleft().set_result(True)
            if self.in_flight >= self.limit:
                return

    async def _wait(self, priority: int) -> None:
        if self.queued >= self.max_queue and not self._displace(priority):
            raise self._shed("the gateway is at its concurrency limit and its queue is full")
        waiters = self.queue_of[priority]
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiters.append(future)
        self.queued += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                admitted = await future
        except BaseException as exc:
            if future.done() and not future.cancelled():
                if future.result():  # a slot came with the deadline or the cancellation
                    if isinstance(exc, TimeoutError):
                        return  # take it
                    self.leave()  # the client is gone: give it back
                    raise
            else:  # still queued (cancelling the task cancelled the future too)
                waiters.remove(future)
                self.queued -= 1
            if isinstance(exc, TimeoutError):
                raise self._shed(
                    f"no slot within {round(self.timeout_s * 1000)} ms; retry shortly"
                ) from None
            raise
        if not admitted:
            raise self._shed("a request of a higher-priority tier took this one's place")

    def _displace(self, priority: int) -> bool:
        """Shed the newest waiter of the lowest tier below `priority` to make room."""
        for level, waiters in reversed(self.queues):
            if level >= priority:
                return False
            if waiters:
                self.queued -= 1
                waiters.pop().set_result(False)
                return True
        return False

    def _shed(self, detail: str) -> Refused:
        return Refused(
            503,
            "overloaded",
            "Too many requests in flight",
            detail,
            [(b"retry-after", self.retry_after)],
        )
