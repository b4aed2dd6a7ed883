"""NATS binding (nats-py). Queue groups share load; replies go to `<inbox>.<cid>`
so that the server's "no responders" status names the request it belongs to."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Mapping

import nats
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext, api

from contracts.bus.base import Bus, HandlerRunner, Subscription
from contracts.bus.errors import NoResponders, NotConnected, PayloadTooLarge, TopicUnavailable
from contracts.bus.message import Handler, Message
from contracts.bus.streams import (
    DEFAULT_MAX_AGE_S,
    Delivered,
    DurableConsumer,
    DurableHandler,
    RetryLater,
    Start,
    Streams,
)
from contracts.envelope import new_id
from contracts.topics import Topics

log = logging.getLogger("relaygate.bus.nats")

_NO_RESPONDERS = "503"
_ACK_TIMEOUT_S = 5.0  # a durable publish the broker has not acknowledged by then failed


def _no_ack(future: asyncio.Future[Message]) -> None:
    if not future.done():
        future.set_exception(NotConnected(f"no ack from the broker within {_ACK_TIMEOUT_S}s"))


class _NatsSubscription(Subscription):
    def __init__(self, sub: NatsSub, runner: HandlerRunner | None) -> None:
        self._sub = sub
        self._runner = runner

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.ConnectionClosedError):
            await self._sub.unsubscribe()
        if self._runner is not None:
            await self._runner.drain()


def stream_name(topic: str) -> str:
    """The JetStream stream that stores `topic` (one per topic; names take no dots)."""
    return topic.replace(".", "_")


class _JetStreamConsumer(DurableConsumer):
    """Pulls up to `concurrency` messages at a time from a durable pull consumer and
    acknowledges each after its handler returned (nak with delay on `RetryLater`)."""

    _FETCH_WAIT_S = 1.0
    _FAILED_DELAY_S = 1.0

    def __init__(
        self,
        js: JetStreamContext,
        sub: JetStreamContext.PullSubscription,
        stream: str,
        durable: str,
        handler: DurableHandler,
        concurrency: int,
    ) -> None:
        self._js, self._sub, self._stream, self._durable = js, sub, stream, durable
        self._handler = handler
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop().create_task(self._pull())

    async def _pull(self) -> None:
        while True:
            await self._slots.acquire()
            free = 1
            while free < self._concurrency and not self._slots.locked():
                await self._slots.acquire()
                free += 1
            try:
                msgs = await self._sub.fetch(free, timeout=self._FETCH_WAIT_S)
            except (nats.errors.TimeoutError, TimeoutError):
                msgs = []
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("jetstream: fetching %s failed: %r", self._durable, exc)
                msgs = []
                await asyncio.sleep(self._FAILED_DELAY_S)
            for _ in range(free - len(msgs)):
                self._slots.release()
            for msg in msgs:
                task = asyncio.get_running_loop().create_task(self._handle(msg))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            meta = msg.metadata
            delivered = Delivered(
                msg.subject, msg.data, msg.headers, meta.num_delivered, meta.sequence.stream
            )
            try:
                await self._handler(delivered)
            except RetryLater as retry:
                await msg.nak(delay=retry.delay_s)
            except Exception:
                log.exception("durable handler %s failed; redelivering", self._durable)
                await msg.nak(delay=self._FAILED_DELAY_S)
            else:
                await msg.ack()
        except nats.errors.Error as exc:
            # The ack did not reach the server: the message comes again after ack_wait.
            log.warning("jetstream: acknowledging on %s failed: %r", self._durable, exc)
        finally:
            self._slots.release()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Handlers get `grace_s` to finish; those cut short are not acknowledged, so
        the broker delivers their messages again after ack_wait."""
        self._loop.cancel()
        await asyncio.gather(self._loop, return_exceptions=True)
        if self._tasks:
            _done, late = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()

    async def delete(self) -> None:
        await self.stop()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_consumer(self._stream, self._durable)


class NatsBus(Bus, Streams):
    def __init__(
        self, url: str, *, topics: Topics, node_id: str, max_pending: int = 10_000
    ) -> None:
        super().__init__(url, topics=topics, node_id=node_id, max_pending=max_pending)
        self._nc: Client | None = None
        self._inbox_prefix = self.inbox + "."
        self._streams: set[str] = set()
        self._stored_topics: set[str] = set()  # whose stream exists: no check per publish
        self._stream_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def max_payload(self) -> int:
        return self._client.max_payload

    @property
    def reconnects(self) -> int:
        """How often the connection was re-established (JetStream watchers start over)."""
        return int(self._client.stats["reconnects"])

    def jetstream(self) -> JetStreamContext:
        """JetStream on this connection (durable streams, the bridge's and service
        discovery's key-value buckets)."""
        return self._client.jetstream(timeout=5.0)

    @property
    def _client(self) -> Client:
        if self._nc is None:
            raise NotConnected(f"not connected to {self.url}")
        return self._nc

    async def connect(self) -> None:
        async def on_error(exc: Exception) -> None:
            log.warning("nats: %s", exc)

        async def on_disconnect() -> None:
            log.warning("nats: disconnected from %s", self.url)

        async def on_reconnect() -> None:
            log.info("nats: reconnected to %s", self.url)

        self._nc = await nats.connect(
            self.url,
            name=f"relaygate-{self.node_id}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            pending_size=64 * 1024 * 1024,
            # Shutdown drains subscriptions; if the server died with us, don't wait 30 s.
            drain_timeout=2,
        )

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            # Drain only a live connection. While the server is gone, drain raises and
            # the reconnect loop keeps going; close() stops it so the process can exit.
            try:
                if nc.is_connected:
                    await nc.drain()
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("nats: drain failed (%s); closing", exc)
            finally:
                if not nc.is_closed:
                    # Flushing to a server that died mid-write fails: closed all the same.
                    with contextlib.suppress(ConnectionError):
                        await nc.close()
        self.pending.fail_all(NotConnected("bus closed"))
        self._inbox = None

    async def publish(
        self, topic: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        try:
            await self._client.publish(topic, data, headers=dict(headers) if headers else None)
        except MaxPayloadError as exc:
            raise PayloadTooLarge(str(exc)) from exc
        except nats.errors.ConnectionClosedError as exc:
            raise NotConnected(str(exc)) from exc

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        concurrency: int = 256,
    ) -> Subscription:
        runner = HandlerRunner(handler, concurrency)

        async def on_msg(msg: Msg) -> None:
            # nats-py awaits this callback before taking the next message, so hand
            # the work to a task: handlers then run concurrently, in arrival order.
            await runner.submit(Message(msg.subject, msg.data, msg.headers))

        sub = await self._client.subscribe(
            topic,
            queue=group or "",
            cb=on_msg,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        return _NatsSubscription(sub, runner)

    def reply_address(self, correlation_id: str) -> str:
        return self._inbox_prefix + correlation_id

    async def reply(self, address: str, data: bytes, *, correlation_id: str) -> None:
        await self.publish(address, data)

    async def _start_inbox(self) -> Subscription:
        prefix_len = len(self._inbox_prefix)
        pending = self.pending

        async def on_reply(msg: Msg) -> None:
            correlation_id = msg.subject[prefix_len:]
            if not msg.data and msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
                pending.no_responders(correlation_id, "the request's topic")
            else:
                pending.resolve(correlation_id, Message(msg.subject, msg.data, msg.headers))

        sub = await self._client.subscribe(
            self._inbox_prefix + "*",
            cb=on_reply,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        return _NatsSubscription(sub, None)

    async def _send_request(self, topic: str, data: bytes, correlation_id: str) -> None:
        try:
            await self._client.publish(topic, data, reply=self._inbox_prefix + correlation_id)
        except MaxPayloadError as exc:
            raise PayloadTooLarge(str(exc)) from exc
        except nats.errors.ConnectionClosedError as exc:
            raise NotConnected(str(exc)) from exc

    # ------------------------------------------------------------------ durable streams

    async def ensure_stream(self, topic: str, *, max_age_s: float = DEFAULT_MAX_AGE_S) -> str:
        """Create the stream that stores `topic` if missing; its name."""
        name = stream_name(topic)
        if name in self._streams:
            return name
        async with self._stream_lock:
            if name in self._streams:
                return name
            js = self.jetstream()
            try:
                try:
                    await js.stream_info(name)
                except nats.js.errors.NotFoundError:
                    await js.add_stream(
                        name=name,
                        subjects=[topic],
                        max_age=max_age_s,
                        duplicate_window=min(120.0, max_age_s),
                        storage=api.StorageType.FILE,
                    )
            except nats.js.errors.ServiceUnavailableError as exc:
                raise TopicUnavailable(f"JetStream is not enabled on {self.url}") from exc
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                raise TopicUnavailable(f"cannot create stream {name}: {exc}") from exc
            self._streams.add(name)
        return name

    async def publish_durable(
        self,
        topic: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if topic not in self._stored_topics:
            await self.ensure_stream(topic)
            self._stored_topics.add(topic)
        all_headers = {**headers, "Nats-Msg-Id": msg_id} if headers else {"Nats-Msg-Id": msg_id}
        # The broker's ack comes to this node's reply inbox, like a reply: one timer and
        # one future, cheaper than nats-py's JetStream publish (event intake's hot path).
        if self._inbox is None:
            async with self._inbox_lock:
                if self._inbox is None:
                    self._inbox = await self._start_inbox()
        token = "ack" + new_id()
        future = self.pending.add(token)
        timer = asyncio.get_running_loop().call_later(_ACK_TIMEOUT_S, _no_ack, future)
        try:
            await self._client.publish(
                topic, data, reply=self._inbox_prefix + token, headers=all_headers
            )
            ack = orjson.loads((await future).data)
        except MaxPayloadError as exc:
            raise PayloadTooLarge(str(exc)) from exc
        except NoResponders as exc:
            raise NotConnected(f"durable publish to {topic}: no stream stores it") from exc
        except (nats.errors.Error, orjson.JSONDecodeError) as exc:
            raise NotConnected(f"durable publish to {topic} failed: {exc!r}") from exc
        finally:
            timer.cancel()
            self.pending.discard(token)
        if "error" in ack:
            raise NotConnected(f"durable publish to {topic} refused: {ack['error']}")

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
        stream = await self.ensure_stream(topic)
        js = self.jetstream()
        deliver = api.DeliverPolicy.ALL if start == "all" else api.DeliverPolicy.NEW
        with contextlib.suppress(nats.js.errors.NotFoundError):
            existing = await js.consumer_info(stream, durable)
            deliver = existing.config.deliver_policy or deliver
        config = api.ConsumerConfig(
            durable_name=durable,
            deliver_policy=deliver,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            # Messages waiting for a retry count as pending: leave room for many.
            max_ack_pending=max(1_000, concurrency),
            filter_subject=topic,
        )
        try:
            # Creates the consumer, or updates one whose settings changed.
            await js.add_consumer(stream, config)
            sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise TopicUnavailable(f"cannot consume {topic} as {durable}: {exc}") from exc
        return _JetStreamConsumer(js, sub, stream, durable, handler, concurrency)

    async def read_one(self, topic: str, partition: int, sequence: int) -> bytes | None:
        stream = await self.ensure_stream(topic)
        try:
            raw = await self.jetstream().get_msg(stream, seq=sequence)
        except nats.js.errors.NotFoundError:
            return None
        return raw.data or b""

    async def read_range(
        self, topic: str, *, since_ms: int, until_ms: int, limit: int
    ) -> list[bytes]:
        stream = await self.ensure_stream(topic)
        start = datetime.datetime.fromtimestamp(since_ms / 1000, tz=datetime.UTC)
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_TIME,
            opt_start_time=start,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=30.0,
            filter_subject=topic,
        )
        sub = await self.jetstream().pull_subscribe(topic, stream=stream, config=config)
        found: list[bytes] = []
        try:
            while len(found) < limit:
                try:
                    batch = await sub.fetch(min(256, limit - len(found)), timeout=0.5)
                except (nats.errors.TimeoutError, TimeoutError):
                    break
                for msg in batch:
                    if int(msg.metadata.timestamp.timestamp() * 1000) > until_ms:
                        return found
                    found.append(msg.data)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return found
