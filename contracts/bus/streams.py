"""Durable streams on the bus: what events and webhooks travel on.

`publish_durable` returns only once the broker stored the message, deduplicated by
`msg_id` (JetStream `Nats-Msg-Id`; Kafka's idempotent producer with acks=all).
`consume` hands each message of a topic to a named durable consumer at least once:
the position is kept by the broker, a message is acknowledged only after its handler
returned, a handler that raises `RetryLater` gets the message again after the delay,
and a consumer that dies mid-message gets it again after `ack_wait_s`. Consumers
sharing a durable name split the messages between them.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

DEFAULT_MAX_AGE_S = 7 * 86_400.0

Start = Literal["all", "new"]


@dataclass(slots=True, frozen=True)
class Delivered:
    """A message handed to a durable consumer. `attempt` is 1 on first delivery and
    counts every redelivery (retries and crashes alike); (`partition`, `sequence`) is its
    position, which `read_one` takes (NATS streams have one partition, 0)."""

    topic: str
    data: bytes
    headers: Mapping[str, str] | None
    attempt: int
    sequence: int
    partition: int = 0


class RetryLater(Exception):
    """Raised by a durable handler: deliver this message again after `delay_s`."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"retry in {delay_s:.3f}s")
        self.delay_s = max(0.0, delay_s)


DurableHandler = Callable[[Delivered], Awaitable[None]]


class DurableConsumer(abc.ABC):
    @abc.abstractmethod
    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking messages; handlers already running get up to `grace_s` to finish
        (those cut short are delivered again). The position stays."""

    @abc.abstractmethod
    async def delete(self) -> None:
        """Stop, and forget the consumer's position on the broker."""


class Streams(abc.ABC):
    """The durable half of the bus facade; the NATS, Kafka and memory buses have it."""

    @abc.abstractmethod
    async def publish_durable(
        self,
        topic: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Store `data` on `topic`; returns after the broker acknowledged it. A second
        publish with the same `msg_id` (within the broker's dedupe window) is dropped."""

    @abc.abstractmethod
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
        """Run `handler` on each message of `topic` for the durable consumer `durable`,
        up to `concurrency` at once. A new consumer starts at the first stored message
        (`all`) or at the next one published (`new`); an existing one resumes."""

    @abc.abstractmethod
    async def read_one(self, topic: str, partition: int, sequence: int) -> bytes | None:
        """The message stored at a position, or None once it is gone (retention)."""

    @abc.abstractmethod
    async def read_range(
        self, topic: str, *, since_ms: int, until_ms: int, limit: int
    ) -> list[bytes]:
        """Up to `limit` messages stored between two times (epoch ms), oldest first."""


def durable(bus: object) -> Streams:
    """The bus's durable streams, or a clear error for a binding without them."""
    if not isinstance(bus, Streams):
        raise TypeError(f"{type(bus).__name__} has no durable streams")
    return bus
