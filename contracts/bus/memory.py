"""In-memory binding for unit tests: several `MemoryBus` objects on one `MemoryHub`
behave like processes on one broker (groups share, no subscriber = no responders)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.bus.base import Bus, HandlerRunner, Subscription
from contracts.bus.errors import NotConnected
from contracts.bus.message import Handler, Message
from contracts.bus.streams import (
    Delivered,
    DurableConsumer,
    DurableHandler,
    RetryLater,
    Start,
    Streams,
)
from contracts.topics import Topics

log = logging.getLogger("relaygate.bus.memory")

_CID_HEADER = "rg-correlation-id"


@dataclass
class _Stream:
    """A durable topic: its messages, the ids seen (dedupe) and each durable's cursor."""

    messages: list[tuple[bytes, Mapping[str, str] | None]] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    cursors: dict[str, int] = field(default_factory=dict)
    grew: asyncio.Condition = field(default_factory=asyncio.Condition)


class MemoryHub:
    """The 'broker': topic -> group -> members. `None` group = every subscriber."""

    def __init__(self) -> None:
        self.members: dict[str, dict[str | None, list[HandlerRunner]]] = defaultdict(dict)
        self.streams: dict[str, _Stream] = defaultdict(_Stream)
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


class _MemoryConsumer(DurableConsumer):
    """Reads a stream from its durable cursor; a retry is a timer that runs the handler
    again. At least once within this process only: nothing outlives it."""

    def __init__(
        self, topic: str, stream: _Stream, durable: str, handler: DurableHandler, concurrency: int
    ) -> None:
        self._topic, self._stream, self._durable, self._handler = topic, stream, durable, handler
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        stream = self._stream
        while True:
            async with stream.grew:
                await stream.grew.wait_for(
                    lambda: stream.cursors[self._durable] < len(stream.messages)
                )
                sequence = stream.cursors[self._durable]
                stream.cursors[self._durable] = sequence + 1
            await self._slots.acquire()
            self._spawn(self._handle(sequence + 1, 1, 0.0))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, sequence: int, attempt: int, delay_s: float) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
            await self._slots.acquire()
        data, headers = self._stream.messages[sequence - 1]
        retry: float | None = None
        try:
            await self._handler(Delivered(self._topic, data, headers, attempt, sequence))
        except RetryLater as exc:
            retry = exc.delay_s
        except Exception:
            log.exception("durable handler %s failed; redelivering", self._durable)
            retry = 1.0
        finally:
            self._slots.release()
        if retry is not None:
            self._spawn(self._handle(sequence, attempt + 1, retry or 0.001))

    async def stop(self, grace_s: float = 5.0) -> None:
        self._loop.cancel()
        await asyncio.gather(self._loop, return_exceptions=True)
        if self._tasks:
            _done, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def delete(self) -> None:
        await self.stop()
        self._stream.cursors.pop(self._durable, None)


class MemoryBus(Bus, Streams):
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

    async def publish_durable(
        self,
        topic: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._check()
        stream = self.hub.streams[topic]
        if msg_id in stream.ids:
            return
        stream.ids.add(msg_id)
        async with stream.grew:
            stream.messages.append((data, dict(headers) if headers else None))
            stream.times.append(time.time_ns() // 1_000_000)
            stream.grew.notify_all()

    async def consume(
        self,
        topic: str,
        durable: str,
        handler: DurableHandler,
        *,
        concurrency: int = 16,
        ack_wait_s: float = 30.0,
        start: Start = "all",
    ) -> DurableConsumer:
        self._check()
        stream = self.hub.streams[topic]
        stream.cursors.setdefault(durable, 0 if start == "all" else len(stream.messages))
        return _MemoryConsumer(topic, stream, durable, handler, concurrency)

    async def read_one(self, topic: str, partition: int, sequence: int) -> bytes | None:
        messages = self.hub.streams[topic].messages
        return messages[sequence - 1][0] if 0 < sequence <= len(messages) else None

    async def read_range(
        self, topic: str, *, since_ms: int, until_ms: int, limit: int
    ) -> list[bytes]:
        stream = self.hub.streams[topic]
        found = [
            data
            for (data, _), at in zip(stream.messages, stream.times, strict=True)
            if since_ms <= at <= until_ms
        ]
        return found[:limit]
