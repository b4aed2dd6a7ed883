"""Requests waiting for their reply, keyed by correlation id, bounded for backpressure."""

from __future__ import annotations

import asyncio

from contracts.bus.errors import Backpressure, NoResponders
from contracts.bus.message import Message


class PendingReplies:
    """A bounded map of correlation id -> future. Full means: shed load, don't queue."""

    __slots__ = ("_futures", "late", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._futures: dict[str, asyncio.Future[Message]] = {}
        self.late = 0  # replies that arrived after their requester gave up

    def __contains__(self, correlation_id: object) -> bool:
        return correlation_id in self._futures

    def __len__(self) -> int:
        return len(self._futures)

    def add(self, correlation_id: str) -> asyncio.Future[Message]:
        if len(self._futures) >= self.limit:
            raise Backpressure(f"{self.limit} requests already wait for a reply")
        if correlation_id in self._futures:
            raise ValueError(f"correlation id {correlation_id!r} is already pending")
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._futures[correlation_id] = future
        return future

    def resolve(self, correlation_id: str, message: Message) -> None:
        future = self._futures.pop(correlation_id, None)
        if future is None or future.done():
            self.late += 1
        else:
            future.set_result(message)

    def no_responders(self, correlation_id: str, topic: str) -> None:
        future = self._futures.pop(correlation_id, None)
        if future is not None and not future.done():
            future.set_exception(NoResponders(f"no subscriber on {topic}"))

    def discard(self, correlation_id: str) -> None:
        self._futures.pop(correlation_id, None)

    def fail_all(self, exc: Exception) -> None:
        futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(exc)
