"""Connection accounting shared by the connections of one listener: the node-wide and
per-address caps, and one periodic sweep that cuts off clients too slow to send their
request (a timer per request would cost more on the hot path than a sweep per tick)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from contracts.config import IngressLimits

log = logging.getLogger("relaygate.ingress")


class Guarded(Protocol):
    """What the sweep needs of a connection: since when it waits for a request head, and
    when it last read some body (which counts only while `reading_body`)."""

    head_since: float | None
    body_since: float | None

    @property
    def reading_body(self) -> bool: ...

    def timed_out(self, phase: str) -> None: ...


class ConnectionGuard:
    """Admits or refuses new connections and times out slow ones. `now` is a coarse clock
    (updated once per tick) that connections stamp themselves with."""

    def __init__(self, limits: IngressLimits) -> None:
        self.limits = limits
        self.max_total = limits.max_connections
        self.max_per_address = limits.max_connections_per_address
        self.header_timeout = limits.header_timeout_s
        self.body_timeout = limits.body_timeout_s
        shortest = min(self.header_timeout, self.body_timeout)
        self.tick_s = max(0.05, min(1.0, shortest / 5))
        self.connections: set[Guarded] = set()
        self.per_address: dict[str, int] = {}
        self.refused = 0
        self.timeouts = 0
        self.now = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.now = loop.time()
        self._timer = loop.call_later(self.tick_s, self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def admit(self, connection: Guarded, address: str | None) -> bool:
        """Count a new connection in, or say no when a cap is reached."""
        if self.max_total is not None and len(self.connections) >= self.max_total:
            self.refused += 1
            return False
        if address is not None and self.max_per_address is not None:
            count = self.per_address.get(address, 0)
            if count >= self.max_per_address:
                self.refused += 1
                return False
            self.per_address[address] = count + 1
        self.connections.add(connection)
        return True

    def release(self, connection: Guarded, address: str | None) -> None:
        self.connections.discard(connection)
        if address is not None and self.max_per_address is not None:
            count = self.per_address.get(address, 0) - 1
            if count > 0:
                self.per_address[address] = count
            else:
                self.per_address.pop(address, None)

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self.now = self._loop.time()
        head_cutoff = now - self.header_timeout
        body_cutoff = now - self.body_timeout
        late: list[tuple[Guarded, str]] = []
        for connection in self.connections:
            head = connection.head_since
            if head is not None and head < head_cutoff:
                late.append((connection, "headers"))
                continue
            body = connection.body_since
            if body is not None and body < body_cutoff and connection.reading_body:
                late.append((connection, "body"))
        for connection, phase in late:  # closing changes the set: not while iterating it
            self.timeouts += 1
            connection.timed_out(phase)
        self._timer = self._loop.call_later(self.tick_s, self._sweep)
