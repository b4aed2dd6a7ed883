"""`relaygate announce`: keep a service instance announced on the bus until SIGINT or
SIGTERM, then say goodbye (bus discovery; see workers/routing/discovery/announce.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiokafka.errors import KafkaError
from nats.errors import Error as NatsError

from workers.routing.discovery.announce import announce

log = logging.getLogger("relaygate.announce")


async def run_announce(
    bus_url: str,
    service: str,
    url: str,
    *,
    ttl_s: float,
    prefix: str,
    group: int,
    weight: int,
    instance_id: str | None,
) -> int:
    """The exit code: 0 after a clean stop, 2 for bad arguments, 1 if the bus is out
    of reach; every failure is one line on stderr."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        async with announce(
            bus_url,
            service,
            url,
            ttl_s,
            prefix=prefix,
            group=group,
            weight=weight,
            instance_id=instance_id,
        ) as announcer:
            log.info(
                "announcing %s as %s/%s on %s every %.1f s",
                url,
                service,
                announcer.instance_id,
                bus_url,
                ttl_s / 3,
            )
            await stopping.wait()
    except ValueError as exc:
        print(f"relaygate announce: {exc}", file=sys.stderr)
        return 2
    except (NatsError, KafkaError, OSError, TimeoutError) as exc:
        print(f"relaygate announce: cannot announce on {bus_url}: {exc!r}", file=sys.stderr)
        return 1
    log.info("stopped announcing %s", url)
    return 0
