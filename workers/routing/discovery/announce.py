"""The announcing side of bus discovery, for services that register themselves:

    async with announce("nats://127.0.0.1:4222", "orders", "http://10.0.0.5:8000"):
        await serve_forever()

While the block runs, the instance is announced every `ttl_s / 3` seconds; on a clean
exit it says goodbye (a KV delete on NATS, a tombstone on Kafka) and leaves the routing
workers' upstream at once; if the process dies, it leaves when its TTL runs out.
A heartbeat that fails (bus down) is logged and retried; the service keeps running.
`relaygate announce --service NAME --url URL` does the same from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import string
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import nats.errors
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from contracts.bus.kafka import bootstrap_servers
from contracts.config import UpstreamInstance
from contracts.topics import check_name
from workers.routing.discovery.bus import (
    announcement,
    bucket_name,
    ensure_compacted_topic,
    open_bucket,
    topic_name,
)

log = logging.getLogger("relaygate.announce")

_FIRST_CONNECT_TRIES = 3

_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "_-")


class Announcer:
    """What `announce` yields: the key it announces under, and how often it did."""

    def __init__(self, service: str, instance_id: str) -> None:
        self.service = service
        self.instance_id = instance_id
        self.heartbeats = 0
        self.failures = 0


@contextlib.asynccontextmanager
async def announce(
    bus_url: str,
    service: str,
    url: str,
    ttl_s: float = 10.0,
    *,
    prefix: str = "rg",
    group: int = 0,
    weight: int = 1,
    instance_id: str | None = None,
) -> AsyncIterator[Announcer]:
    """Announce `url` as an instance of `service` on the bus at `bus_url` (nats://,
    tls:// or kafka://) with the bus prefix `prefix`, while the block runs.

    Raises ValueError for bad arguments, before anything is sent."""
    try:
        UpstreamInstance(url=url, group=group, weight=weight)  # the reader's own checks
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{first['loc'][0]}: {first['msg']}") from None
    if not service or any(c not in _KEY_CHARS for c in service):
        raise ValueError(f"service {service!r}: use letters, digits, '-' and '_'")
    if ttl_s < 1:
        raise ValueError("ttl_s must be at least 1 second")
    check_name(prefix)
    instance_id = instance_id or uuid.uuid4().hex
    if any(c not in _KEY_CHARS for c in instance_id):
        raise ValueError(f"instance id {instance_id!r}: use letters, digits, '-' and '_'")
    announcer = Announcer(service, instance_id)
    value = functools.partial(announcement, url, group=group, weight=weight, ttl_s=ttl_s)
    scheme = bus_url.split("://", 1)[0].lower()
    if scheme in ("nats", "tls"):
        body = _announce_nats(bus_url, announcer, value, ttl_s, prefix)
    elif scheme == "kafka":
        body = _announce_kafka(bus_url, announcer, value, ttl_s, prefix)
    else:
        raise ValueError(f"{bus_url!r}: announce needs a nats://, tls:// or kafka:// URL")
    async with body:
        yield announcer


@contextlib.asynccontextmanager
async def _announce_nats(
    bus_url: str, announcer: Announcer, value: Callable[[], bytes], ttl_s: float, prefix: str
) -> AsyncIterator[None]:
    async def on_error(exc: Exception) -> None:
        log.debug("announce: nats: %r", exc)

    # A few tries at first, so that an unreachable bus is a clear failure; once
    # connected, reconnect for as long as it takes.
    nc = await nats.connect(
        bus_url,
        name=f"relaygate-announce-{announcer.service}",
        max_reconnect_attempts=_FIRST_CONNECT_TRIES,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        error_cb=on_error,
    )
    nc.options["max_reconnect_attempts"] = -1
    key = f"{announcer.service}.{announcer.instance_id}"
    try:
        kv = await open_bucket(nc.jetstream(), bucket_name(prefix), ttl_s)

        async def beat() -> None:
            await kv.put(key, value())

        async with _heartbeat(announcer, beat, ttl_s, (nats.errors.Error, TimeoutError)):
            yield
        try:
            await kv.delete(key)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("announce %s: goodbye not sent (%r); it expires by TTL", key, exc)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def _announce_kafka(
    bus_url: str, announcer: Announcer, value: Callable[[], bytes], ttl_s: float, prefix: str
) -> AsyncIterator[None]:
    servers = bootstrap_servers(bus_url)
    topic = topic_name(prefix)
    client_id = f"relaygate-announce-{announcer.service}"
    await ensure_compacted_topic(servers, topic, client_id)
    producer = AIOKafkaProducer(bootstrap_servers=servers, client_id=client_id, linger_ms=0)
    await producer.start()
    key = f"{announcer.service}/{announcer.instance_id}".encode()
    try:

        async def beat() -> None:
            await producer.send_and_wait(topic, value(), key=key)

        async with _heartbeat(announcer, beat, ttl_s, (KafkaError, TimeoutError)):
            yield
        try:
            await producer.send_and_wait(topic, None, key=key)  # the tombstone
        except KafkaError as exc:
            log.warning("announce %s: goodbye not sent (%r); it expires by TTL", key, exc)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def _heartbeat(
    announcer: Announcer,
    beat: Callable[[], Awaitable[None]],
    ttl_s: float,
    errors: tuple[type[BaseException], ...],
) -> AsyncIterator[None]:
    """The first beat (a failure is the caller's: nothing announced), then one every
    `ttl_s / 3` while the block runs (a failure is logged and retried)."""
    await beat()
    announcer.heartbeats += 1

    async def loop() -> None:
        while True:
            await asyncio.sleep(ttl_s / 3)
            try:
                await beat()
                announcer.heartbeats += 1
            except errors as exc:
                announcer.failures += 1
                log.warning("announce %s: heartbeat failed (%r); retrying", announcer.service, exc)

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
