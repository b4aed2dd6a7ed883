"""`StatePublisher`: every second, the routing worker's per-upstream state (breaker,
instances, outstanding requests, ejections) as JSON on `<prefix>.evt.routing.state`,
where every ingress node's admin API (`GET /upstreams`) picks it up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import orjson

from contracts.bus import Bus, BusError
from contracts.envelope import now_ms
from workers.routing.background import BackgroundLoop
from workers.routing.upstream import UpstreamPool

log = logging.getLogger("relaygate.routing")

STATE_EVENT = "routing.state"


class StatePublisher(BackgroundLoop):
    def __init__(
        self, bus: Bus, pools: Mapping[str, UpstreamPool], interval_s: float = 1.0
    ) -> None:
        self._bus = bus
        self._pools = pools
        self._interval_s = interval_s
        self._topic = bus.topics.event(STATE_EVENT)

    def message(self) -> bytes:
        return orjson.dumps(
            {
                "node": self._bus.node_id,
                "time": now_ms(),
                "upstreams": {name: pool.snapshot() for name, pool in self._pools.items()},
            }
        )

    async def _run(self) -> None:
        while True:
            try:
                await self._bus.publish(self._topic, self.message())
            except BusError as exc:
                # The bus reconnects by itself; the next tick publishes the fresh state.
                log.debug("routing state not published: %s", exc)
            await asyncio.sleep(self._interval_s)
