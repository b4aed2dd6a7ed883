"""The ingress nodes a dashboard lists: after each sample every node publishes a short
summary (rates, p99, pending replies) on `<prefix>.evt.dashboard.node`, and reads every
node's, without a group (like `UpstreamStates`), so each dashboard sees the fleet. A
node not heard from for `stale_s` seconds is dropped. One small message per node per
interval."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from contracts.bus import Bus, BusError, Message, Subscription

log = logging.getLogger("relaygate.admin")

NODE_EVENT = "dashboard.node"


class IngressNodes:
    def __init__(self, bus: Bus, stale_s: float = 5.0) -> None:
        self._bus = bus
        self.stale_s = stale_s
        self._topic = bus.topics.event(NODE_EVENT)
        self._latest: dict[str, tuple[float, dict[str, Any]]] = {}
        self._subscription: Subscription | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._started = False

    async def start(self) -> None:
        """Subscribe; once, however many times it is called."""
        if self._started:
            return
        self._started = True
        try:
            self._subscription = await self._bus.subscribe(
                self._topic, self._on_node, concurrency=1
            )
        except BusError as exc:
            log.warning(
                "the dashboard lists only this node: cannot subscribe to %s: %s", self._topic, exc
            )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None

    def record(self, point: dict[str, Any]) -> None:
        """This node's new point: listed here at once, sent to the others in the
        background (one small publish; a slow bus never delays a sample)."""
        total, bus = point["total"], point["bus"]
        summary = {
            "node": self._bus.node_id,
            "time": point["t"],
            "rps": total["rps"],
            "e4": total["e4"],
            "e5": total["e5"],
            "p99": total["p99"],
            "pending": bus["pending"],
            "in_flight": bus["in_flight"],
        }
        self._latest[self._bus.node_id] = (time.monotonic(), summary)
        if self._subscription is not None and not self._sending:  # at most one in flight
            task = asyncio.get_running_loop().create_task(self._send(orjson.dumps(summary)))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, data: bytes) -> None:
        try:
            await self._bus.publish(self._topic, data)
        except BusError as exc:  # the bus reconnects by itself; the next point goes out
            log.debug("dashboard node summary not published: %s", exc)

    def current(self) -> list[dict[str, Any]]:
        """The latest summary of each node heard from recently, by node id."""
        cutoff = time.monotonic() - self.stale_s
        for node in [n for n, (seen, _) in self._latest.items() if seen < cutoff]:
            del self._latest[node]
        return [summary for _, (_, summary) in sorted(self._latest.items())]

    async def _on_node(self, message: Message) -> None:
        try:
            summary = orjson.loads(message.data)
            node = summary["node"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed dashboard node summary on %s", message.topic)
            return
        if isinstance(node, str) and isinstance(summary, dict):
            self._latest[node] = (time.monotonic(), summary)
