"""Where the bridge keeps its state, as two small interfaces: the endpoint store (every
replica watches it) and append-only journals (the attempt log, the dead-letter queue).
On NATS they are JetStream objects (`bridge.jetstream`); on Kafka, Redis
(`bridge.redis_state`, when `state.url` is set)."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bridge.model import Endpoint

OnChange = Callable[[str, Endpoint | None], Awaitable[None]]


class Conflict(Exception):
    """The endpoint changed under us too often; try again."""


class EndpointStore(abc.ABC):
    """Endpoints by id. `modify` is compare-and-set, so that two replicas changing one
    endpoint never lose an update; `watch` reports every change, from any replica."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def get(self, endpoint_id: str) -> Endpoint | None: ...

    @abc.abstractmethod
    async def list(self) -> list[Endpoint]:
        """Oldest first."""

    @abc.abstractmethod
    async def create(self, endpoint: Endpoint) -> None: ...

    @abc.abstractmethod
    async def modify(
        self, endpoint_id: str, change: Callable[[Endpoint], Endpoint]
    ) -> Endpoint | None:
        """Apply `change` to the stored endpoint; None if there is none."""

    @abc.abstractmethod
    async def delete(self, endpoint_id: str) -> bool: ...

    @abc.abstractmethod
    async def watch(self, on_change: OnChange) -> None:
        """Call `on_change` for every endpoint stored now, then for every change."""

    @abc.abstractmethod
    async def close(self) -> None: ...


@dataclass(slots=True, frozen=True)
class Entry:
    seq: int
    key: str
    data: bytes


class Journal(abc.ABC):
    """Records under a key (an endpoint id), numbered by a growing `seq`."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def append(self, key: str, data: bytes, *, msg_id: str | None = None) -> None:
        """Store a record; a second append with the same `msg_id` is dropped."""

    @abc.abstractmethod
    async def scan(self, key: str | None, *, limit: int, newest_first: bool = False) -> list[Entry]:
        """Up to `limit` records of `key` (None: of every key)."""

    @abc.abstractmethod
    async def get(self, seq: int) -> Entry | None: ...

    @abc.abstractmethod
    async def remove(self, seq: int) -> bool: ...
