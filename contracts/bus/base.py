"""The bus facade: `publish`, `subscribe` (with a consumer group) and `request`.

A binding implements the transport; request/reply by correlation id is shared:
the requester registers a future in `PendingReplies`, sends the request with
`reply_address(correlation_id)` in the envelope, and the binding's inbox
resolves the future when the reply arrives.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from contracts.bus.errors import RequestTimeout
from contracts.bus.message import Handler, Message
from contracts.bus.pending import PendingReplies
from contracts.telemetry import tracing
from contracts.telemetry.metrics import BUS_PUBLISH, BUS_REQUEST
from contracts.telemetry.tracing import PRODUCER, Span, Tracer
from contracts.topics import Topics

log = logging.getLogger("relaygate.bus")

DEFAULT_CONCURRENCY = 256
PUBLISHED_REQUEST = BUS_PUBLISH.labels("request")


class _Expired(Exception):
    """The request's timer fired before its reply arrived."""


def _expire(future: asyncio.Future[Message]) -> None:
    if not future.done():
        future.set_exception(_Expired())


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop receiving; handlers already running finish."""


class Bus(abc.ABC):
    """One connection to a broker, shared by everything in a process."""

    def __init__(
        self, url: str, *, topics: Topics, node_id: str, max_pending: int = 10_000
    ) -> None:
        self.url = url
        self.topics = topics
        self.node_id = node_id
        self.inbox = topics.reply(node_id)
        self.pending = PendingReplies(max_pending)
        self._inbox_lock = asyncio.Lock()
        self._inbox: Subscription | None = None
        # messaging.system of the spans: nats, kafka or memory (tls:// is NATS too).
        scheme = url.split("://", 1)[0]
        self.system = "nats" if scheme == "tls" else scheme
        self._request_meters: dict[str, Any] = {}

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Drain what was published, stop subscriptions, disconnect."""

    @abc.abstractmethod
    async def publish(
        self, topic: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None: ...

    @abc.abstractmethod
    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        group: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> Subscription:
        """Deliver each message of `topic` to `handler`. Subscribers sharing a `group`
        split the messages between them; without one, each gets every message.
        Up to `concurrency` handlers run at once."""

    @abc.abstractmethod
    def reply_address(self, correlation_id: str) -> str:
        """Where a responder sends the reply to this request (the envelope's `replyto`)."""

    @abc.abstractmethod
    async def reply(self, address: str, data: bytes, *, correlation_id: str) -> None:
        """Send a reply to a `replyto` address taken from a request envelope."""

    @abc.abstractmethod
    async def _start_inbox(self) -> Subscription:
        """Subscribe to this node's replies and resolve `self.pending` from them."""

    @abc.abstractmethod
    async def _send_request(self, topic: str, data: bytes, correlation_id: str) -> None: ...

    async def request(
        self, topic: str, data: bytes, *, correlation_id: str, timeout: float
    ) -> Message:
        """Publish a request and wait for its reply; `data` must carry
        `reply_address(correlation_id)` so that the responder knows where to answer."""
        if self._inbox is None:
            async with self._inbox_lock:
                if self._inbox is None:
                    self._inbox = await self._start_inbox()
        future = self.pending.add(correlation_id)
        # One timer handle per request: cheaper than an asyncio.timeout() scope, and
        # this runs for every request the ingress serves.
        timer = asyncio.get_running_loop().call_later(timeout, _expire, future)
        tracer = tracing.tracer()
        span = None if tracer is None else self._request_span(tracer, topic, correlation_id)
        started = time.perf_counter()
        try:
            await self._send_request(topic, data, correlation_id)
            sent = time.perf_counter()
            PUBLISHED_REQUEST.observe(sent - started)
            reply = await future
            self._request_meter(topic).observe(time.perf_counter() - started)
            return reply
        except _Expired:
            if span is not None:
                span.set_error("RequestTimeout")
            raise RequestTimeout(f"no reply on {topic} within {timeout:.3f}s") from None
        except BaseException as exc:
            if span is not None:
                span.set_error(type(exc).__name__)
            raise
        finally:
            timer.cancel()
            self.pending.discard(correlation_id)
            if span is not None:
                span.end()

    def _request_meter(self, topic: str) -> Any:
        meter = self._request_meters.get(topic)
        if meter is None:
            meter = self._request_meters[topic] = BUS_REQUEST.labels(topic)
        return meter

    def _request_span(self, tracer: Tracer, topic: str, correlation_id: str) -> Span | None:
        """The PRODUCER span of a request (messaging semantic conventions), a child of
        the current span, lasting until the reply comes; with `producer_spans` off, the
        current span gets the messaging attributes instead (and None is returned). The
        envelope carries the current span's context either way: the consumer's span is
        its child, and a PRODUCER span would only be a leaf beside it."""
        if not tracer.producer_spans:
            current = tracing.current()
            if current is not None and current.sampled:
                attributes = current.attributes
                attributes["messaging.system"] = self.system
                attributes["messaging.destination.name"] = topic
            return None
        return tracer.start(
            f"publish {topic}",
            PRODUCER,
            {
                "messaging.system": self.system,
                "messaging.destination.name": topic,
                "messaging.operation": "publish",
                "messaging.operation.type": "send",
                "messaging.message.conversation_id": correlation_id,
            },
        )

    async def _stop_inbox(self) -> None:
        if self._inbox is not None:
            await self._inbox.stop()
            self._inbox = None


class HandlerRunner:
    """Runs handlers as tasks, at most `concurrency` at once, and logs their crashes."""

    __slots__ = ("_handler", "_idle", "_slots", "_tasks")

    def __init__(self, handler: Handler, concurrency: int) -> None:
        self._handler = handler
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, message: Message) -> None:
        """Start the handler; waits only while `concurrency` handlers are running."""
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._run(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, message: Message) -> None:
        try:
            await self._handler(message)
        except Exception:
            log.exception("handler for %s failed", message.topic)
        finally:
            self._slots.release()

    async def drain(self, timeout: float = 10.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
