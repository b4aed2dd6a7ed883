"""`UpstreamStates`: the latest per-upstream state (breakers, instance health) that each
routing worker publishes on `<prefix>.evt.routing.state`, for the admin API. Every
ingress node subscribes without a group, so each one sees every worker; a worker not
heard from for `stale_s` seconds is dropped."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from contracts.bus import Bus, BusError, Message, Subscription

log = logging.getLogger("relaygate.admin")

# The event the routing worker publishes (workers.routing.STATE_EVENT); the ingress
# does not import the workers package.
STATE_EVENT = "routing.state"


class UpstreamStates:
    def __init__(self, stale_s: float = 5.0) -> None:
        self.stale_s = stale_s
        self._latest: dict[str, tuple[float, dict[str, Any]]] = {}
        self._subscription: Subscription | None = None
        self._started = False

    async def start(self, bus: Bus) -> None:
        """Subscribe; once, however many times it is called."""
        if self._started:
            return
        self._started = True
        topic = bus.topics.event(STATE_EVENT)
        try:
            self._subscription = await bus.subscribe(topic, self._on_state, concurrency=1)
        except BusError as exc:
            self._started = False
            log.warning("GET /upstreams stays empty: cannot subscribe to %s: %s", topic, exc)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
        self._started = False

    def current(self) -> list[dict[str, Any]]:
        """The latest state of each worker heard from recently, by node id."""
        cutoff = time.monotonic() - self.stale_s
        for node in [n for n, (seen, _) in self._latest.items() if seen < cutoff]:
            del self._latest[node]
        return [state for _, (_, state) in sorted(self._latest.items())]

    async def _on_state(self, message: Message) -> None:
        try:
            state = orjson.loads(message.data)
            node = state["node"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed routing state on %s", message.topic)
            return
        if isinstance(node, str):
            self._latest[node] = (time.monotonic(), state)
