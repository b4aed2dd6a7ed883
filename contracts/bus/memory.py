"""In-memory binding for unit tests: several `MemoryBus` objects on one `MemoryHub`
behave like processes on one broker (groups share, no subscriber = no responders)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping

from contracts.bus.base import Bus, HandlerRunner, Subscription
from contracts.bus.errors import NotConnected
from contracts.bus.message import Handler, Message
from contracts.topics import Topics

_CID_HEADER = "rg-correlation-id"


class MemoryHub:
    """The 'broker': topic -> group -> members. `None` group = every subscriber."""

    def __init__(self) -> None:
        self.members: dict[str, dict[str | None, list[HandlerRunner]]] = defaultdict(dict)
        self._turn = itertools.count()

    def receivers(self, topic: str) -> list[HandlerRunner]:
        chosen: list[HandlerRunner] = []
        for group, runners in self.members.get(topic, {}).items():
            if not runners:
                continue
            if group is None:
                chosen.extend(runners)
            else:
                chosen.append(runners[next(self._turn) % len(runners)])
        return chosen


_default_hub = MemoryHub()


class _MemorySubscription(Subscription):
    def __init__(self, hub: MemoryHub, topic: str, group: str | None, runner: HandlerRunner):
        self._hub, self._topic, self._group, self._runner = hub, topic, group, runner

    async def stop(self) -> None:
        runners = self._hub.members[self._topic].get(self._group, [])
        if self._runner in runners:
            runners.remove(self._runner)
        await self._runner.drain()


class MemoryBus(Bus):
    def __init__(
        self,
        url: str = "memory://",
        *,
        topics: Topics,
        node_id: str,
        max_pending: int = 10_000,
        hub: MemoryHub | None = None,
    ) -> None:
        super().__init__(url, topics=topics, node_id=node_id, max_pending=max_pending)
        self.hub = hub or _default_hub
        self._connected = False
        self._subscriptions: list[Subscription] = []

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        self._connected = True

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        self._inbox = None
        self._connected = False
        self.pending.fail_all(NotConnected("bus closed"))

    def _check(self) -> None:
        if not self._connected:
            raise NotConnected(f"not connected to {self.url}")

    async def publish(
        self, topic: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self._check()
        message = Message(topic, data, dict(headers) if headers else None)
        for runner in self.hub.receivers(topic):
            await runner.submit(message)

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        concurrency: int = 256,
    ) -> Subscription:
        self._check()
        runner = HandlerRunner(handler, concurrency)
        self.hub.members[topic].setdefault(group, []).append(runner)
        sub = _MemorySubscription(self.hub, topic, group, runner)
        self._subscriptions.append(sub)
        return sub

    def reply_address(self, correlation_id: str) -> str:
        return self.inbox

    async def reply(self, address: str, data: bytes, *, correlation_id: str) -> None:
        await self.publish(address, data, headers={_CID_HEADER: correlation_id})

    async def _start_inbox(self) -> Subscription:
        pending = self.pending

        async def on_reply(message: Message) -> None:
            correlation_id = (message.headers or {}).get(_CID_HEADER)
            if correlation_id is not None:
                pending.resolve(correlation_id, message)

        return await self.subscribe(self.inbox, on_reply)

    async def _send_request(self, topic: str, data: bytes, correlation_id: str) -> None:
        self._check()
        receivers = self.hub.receivers(topic)
        if not receivers:
            self.pending.no_responders(correlation_id, topic)
            return
        message = Message(topic, data)
        for runner in receivers:
            await runner.submit(message)
