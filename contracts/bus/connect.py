"""Building and connecting the bus a process uses, from the config."""

from __future__ import annotations

import asyncio
import logging

from contracts.bus import Bus, create_bus
from contracts.config import Config
from contracts.topics import Topics

log = logging.getLogger("relaygate.bus")


class BusNotConfigured(SystemExit):
    def __init__(self) -> None:
        super().__init__(
            "bus.url is not set: give one (nats://… or kafka://…), or use `relaygate up`, "
            "which starts an embedded NATS server"
        )


def bus_from_config(config: Config, node_id: str) -> Bus:
    if config.bus.url is None:
        raise BusNotConfigured
    return create_bus(
        config.bus.url,
        node_id=node_id,
        topics=Topics(config.bus.prefix),
        max_pending=config.ingress.max_pending,
        kafka_options=config.bus.kafka,
    )


async def connect_with_retry(bus: Bus, *, attempts: int = 60, delay: float = 0.5) -> None:
    """The bus may come up after us (compose, `relaygate up`): retry, and say so."""
    for attempt in range(1, attempts + 1):
        try:
            await bus.connect()
            return
        except Exception as exc:  # each binding raises its own connection errors
            if attempt == attempts:
                raise
            if attempt == 1 or attempt % 10 == 0:
                log.warning("bus %s not reachable (%s); retrying", bus.url, exc)
            await asyncio.sleep(delay)
