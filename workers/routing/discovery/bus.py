"""Self-registration over the bus: services announce themselves with a heartbeat (see
`announce.py`); the routing worker reads the announcements of the services it routes to.

    NATS:  a JetStream key-value bucket `<prefix>_services` whose TTL expires stale
           keys; key `<service>.<instance>`; watched with a KV watcher.
    Kafka: a compacted topic `<prefix>.services`, key `<service>/<instance>`; a clean
           stop writes a tombstone; the reader reads it from the start.

Each announcement is JSON `{"url", "group", "weight", "ttl_ms", "time_ms"}`. On both
buses the reader drops an instance whose last announcement is older than its `ttl_ms`,
so an instance that dies without a goodbye leaves within its TTL whatever the broker
does with the stale record."""

from __future__ import annotations

import contextlib
import logging
import time

import nats.errors
import nats.js.errors
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from contracts.bus import Bus, BusError
from contracts.bus.kafka import KafkaBus
from contracts.bus.nats import NatsBus
from contracts.config import BusDiscovery, UpstreamInstance
from contracts.envelope import now_ms
from workers.routing.discovery.base import DiscoveryUnavailable, Source, Update, parse_instance
from workers.routing.window import Clock

log = logging.getLogger("relaygate.routing.discovery")

_TOPIC_ALREADY_EXISTS = 36  # TopicAlreadyExists
_IDLE_WAIT_S = 1.0
_MAX_TTL_MS = 3_600_000


def bucket_name(prefix: str) -> str:
    """The NATS KV bucket of a bus prefix (bucket names take no dots)."""
    return prefix.replace(".", "_") + "_services"


def topic_name(prefix: str) -> str:
    """The compacted Kafka topic of a bus prefix."""
    return f"{prefix}.services"


def announcement(url: str, *, group: int = 0, weight: int = 1, ttl_s: float = 10.0) -> bytes:
    return orjson.dumps(
        {
            "url": url,
            "group": group,
            "weight": weight,
            "ttl_ms": round(ttl_s * 1000),
            "time_ms": now_ms(),
        }
    )


async def open_bucket(js: JetStreamContext, bucket: str, ttl_s: float) -> KeyValue:
    """The bucket, created with `ttl_s` if missing (with expiry markers where the server
    has them, so watchers see an expired key go)."""
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    try:
        return await js.create_key_value(
            bucket=bucket, ttl=ttl_s, history=1, limit_marker_ttl=max(ttl_s, 1.0)
        )
    except nats.js.errors.KeyValueLimitMarkerTTLNotSupportedError:
        return await js.create_key_value(bucket=bucket, ttl=ttl_s, history=1)
    except nats.js.errors.BadRequestError:
        # Another reader or announcer created it meanwhile, maybe with another TTL.
        return await js.key_value(bucket)


async def ensure_compacted_topic(
    servers: list[str], topic: str, client_id: str, replication_factor: int = 1
) -> None:
    """Create the one-partition compacted topic, unless it exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, client_id=client_id)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(topic, 1, replication_factor, topic_configs={"cleanup.policy": "compact"})]
        )
        for _name, error_code, *details in response.topic_errors:
            if error_code not in (0, _TOPIC_ALREADY_EXISTS):
                raise DiscoveryUnavailable(f"cannot create topic {topic}: {details or error_code}")
    finally:
        await admin.close()


class Announcements:
    """The live announcements of one service: key -> instance, until its TTL runs out."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._live: dict[str, tuple[UpstreamInstance, float]] = {}

    def instances(self) -> list[UpstreamInstance]:
        return [instance for instance, _ in sorted(self._live.values(), key=lambda v: v[0].url)]

    def apply(self, key: str, data: bytes | None) -> bool:
        """Record an announcement (None or empty: a goodbye); whether the set changed."""
        before = self._live.get(key)
        if not data:
            self._live.pop(key, None)
            return before is not None
        try:
            instance = parse_instance(data)
            record = orjson.loads(data)
            ttl_ms = min(max(int(record.get("ttl_ms", 10_000)), 1), _MAX_TTL_MS)
            age_ms = max(0, now_ms() - int(record.get("time_ms", now_ms())))
        except (ValueError, TypeError) as exc:
            log.warning("announcement %s skipped: %s", key, exc)
            return False
        expires = self._clock() + (ttl_ms - age_ms) / 1000
        if expires <= self._clock():
            self._live.pop(key, None)
            return before is not None
        self._live[key] = (instance, expires)
        return before is None or before[0] != instance

    def expire(self) -> bool:
        now = self._clock()
        stale = [key for key, (_, expires) in self._live.items() if expires <= now]
        for key in stale:
            log.info("announcement %s expired", key)
            del self._live[key]
        return bool(stale)

    def wait_s(self) -> float:
        """How long until the next expiry (at most a second, to stay responsive)."""
        if not self._live:
            return _IDLE_WAIT_S
        soonest = min(expires for _, expires in self._live.values())
        return min(max(soonest - self._clock(), 0.01), _IDLE_WAIT_S)


class NatsBusSource(Source):
    kind = "bus"

    def __init__(self, upstream: str, options: BusDiscovery, bus: NatsBus) -> None:
        self._service = options.service or upstream
        self._ttl_s = options.ttl_s
        self._bus = bus
        self._bucket = bucket_name(bus.topics.prefix)

    def describe(self) -> str:
        return f"nats kv {self._bucket} {self._service}.*"

    async def watch(self, update: Update) -> None:
        try:
            reconnects = self._bus.reconnects
            kv = await open_bucket(self._bus.jetstream(), self._bucket, self._ttl_s)
            watcher = await kv.watch(f"{self._service}.*")
        except (nats.errors.Error, BusError, TimeoutError) as exc:
            raise DiscoveryUnavailable(f"nats kv {self._bucket}: {exc!r}") from exc
        prefix_len = len(self._service) + 1
        live = Announcements()
        ready = False
        try:
            while True:
                changed = False
                try:
                    entry = await watcher.updates(timeout=live.wait_s())  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    pass
                else:
                    if entry is None:  # caught up with what the bucket holds
                        changed = not ready
                        ready = True
                    elif entry.operation in (KV_DEL, KV_PURGE):
                        changed = live.apply(entry.key[prefix_len:], None)
                    else:
                        changed = live.apply(entry.key[prefix_len:], entry.value)
                changed = live.expire() or changed
                if ready and changed:
                    update(live.instances())
                if self._bus.reconnects != reconnects:
                    # The server may have lost the watcher's consumer (a restart): start
                    # over; the bucket replays the live announcements.
                    raise DiscoveryUnavailable("nats reconnected; watching again")
        finally:
            with contextlib.suppress(nats.errors.Error):
                await watcher.stop()  # type: ignore[no-untyped-call]


class KafkaBusSource(Source):
    kind = "bus"

    def __init__(self, upstream: str, options: BusDiscovery, bus: KafkaBus) -> None:
        self._service = options.service or upstream
        self._bus = bus
        self._topic = topic_name(bus.topics.prefix)

    def describe(self) -> str:
        return f"kafka topic {self._topic} {self._service}/*"

    async def watch(self, update: Update) -> None:
        client_id = f"relaygate-{self._bus.node_id}-discovery"
        try:
            await ensure_compacted_topic(
                self._bus.servers,
                self._topic,
                client_id,
                self._bus.options.replication_factor,
            )
        except KafkaError as exc:
            raise DiscoveryUnavailable(f"kafka topic {self._topic}: {exc!r}") from exc
        consumer = AIOKafkaConsumer(
            self._topic,
            bootstrap_servers=self._bus.servers,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        mine = f"{self._service}/".encode()
        live = Announcements()
        try:
            await consumer.start()
            update([])
            while True:
                batches = await consumer.getmany(timeout_ms=round(live.wait_s() * 1000))
                changed = False
                for records in batches.values():
                    for record in records:
                        key = record.key
                        if key is None or not key.startswith(mine):
                            continue
                        changed = live.apply(key[len(mine) :].decode(), record.value) or changed
                changed = live.expire() or changed
                if changed:
                    update(live.instances())
        except KafkaError as exc:
            raise DiscoveryUnavailable(f"kafka topic {self._topic}: {exc!r}") from exc
        finally:
            await consumer.stop()


def bus_source(upstream: str, options: BusDiscovery, bus: Bus | None) -> Source:
    if isinstance(bus, NatsBus):
        return NatsBusSource(upstream, options, bus)
    if isinstance(bus, KafkaBus):
        return KafkaBusSource(upstream, options, bus)
    raise DiscoveryUnavailable(
        f"upstream {upstream}: bus discovery needs a NATS or Kafka bus, not {bus and bus.url}"
    )
