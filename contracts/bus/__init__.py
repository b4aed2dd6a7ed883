"""The bus facade and its bindings, chosen by URL scheme (nats://, kafka://, memory://)."""

from __future__ import annotations

from contracts.bus.base import Bus, Subscription
from contracts.bus.errors import (
    Backpressure,
    BusError,
    NoResponders,
    NotConnected,
    PayloadTooLarge,
    RequestTimeout,
    TopicUnavailable,
)
from contracts.bus.message import Handler, Message
from contracts.config import KafkaOptions
from contracts.topics import Topics

__all__ = [
    "Backpressure",
    "Bus",
    "BusError",
    "Handler",
    "Message",
    "NoResponders",
    "NotConnected",
    "PayloadTooLarge",
    "RequestTimeout",
    "Subscription",
    "TopicUnavailable",
    "create_bus",
]


def create_bus(
    url: str,
    *,
    node_id: str,
    topics: Topics | None = None,
    max_pending: int = 10_000,
    kafka_options: KafkaOptions | None = None,
) -> Bus:
    """A bus for `url`; call `await bus.connect()` before use."""
    topics = topics or Topics()
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("nats", "tls"):
        from contracts.bus.nats import NatsBus

        return NatsBus(url, topics=topics, node_id=node_id, max_pending=max_pending)
    if scheme == "kafka":
        from contracts.bus.kafka import KafkaBus

        return KafkaBus(
            url, topics=topics, node_id=node_id, max_pending=max_pending, options=kafka_options
        )
    if scheme == "memory":
        from contracts.bus.memory import MemoryBus

        return MemoryBus(url, topics=topics, node_id=node_id, max_pending=max_pending)
    raise ValueError(f"unsupported bus URL {url!r}: use nats://, kafka:// or memory://")
