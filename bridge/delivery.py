"""Delivery: every active endpoint has its own durable consumers (the event stream and
its replay topic), its own concurrency and pace, so that a slow or dead endpoint only
ever delays itself. An attempt that fails is retried by the broker after the next delay
of the schedule (nak with delay: a restart loses nothing); after the last one, or on
410 Gone (which also disables the endpoint), the event goes to the dead-letter queue."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from bridge.model import Attempt, Endpoint, event_matcher, now_ms
from bridge.sender import Outcome, Sender
from bridge.state import EndpointStore, Journal
from contracts.bus.base import Bus
from contracts.bus.streams import Delivered, DurableConsumer, RetryLater, durable
from contracts.codec import CodecError, EnvelopeCodec
from contracts.config import BridgeConfig
from contracts.envelope import EVENT_PREFIX, Envelope

log = logging.getLogger("relaygate.bridge")

_PAUSED_RECHECK_S = 5.0
_STOP_GRACE_S = 1.0

Result = Literal["delivered", "retry", "dead-lettered", "endpoint-disabled"]


def event_type(envelope: Envelope) -> str:
    """The event's name: the envelope's subject, else its type without `event.`."""
    if envelope.subject:
        return envelope.subject
    return envelope.type.removeprefix(EVENT_PREFIX)


def webhook_body(envelope: Envelope) -> bytes:
    """`{"type", "timestamp", "data"}` as Standard Webhooks suggests; the same bytes on
    every attempt. JSON data is embedded as JSON, anything else as text."""
    data: Any
    if envelope.datacontenttype is None or "json" in envelope.datacontenttype:
        try:
            data = orjson.loads(envelope.data) if envelope.data else None
        except orjson.JSONDecodeError:
            data = envelope.data.decode("utf-8", "replace")
    else:
        data = envelope.data.decode("utf-8", "replace")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(envelope.time / 1000))
    return orjson.dumps(
        {
            "type": event_type(envelope),
            "timestamp": f"{stamp}.{envelope.time % 1000:03d}Z",
            "data": data,
        }
    )


class Pacer:
    """At most `rate` attempts a second from this replica, evenly spaced."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self._interval
        if at > now:
            await asyncio.sleep(at - now)


Forget = Callable[[str, dict[str, str]], Awaitable[None]]
"""Drop what a deleted endpoint leaves on the broker: (endpoint id, topic -> durable)."""


@dataclass(slots=True)
class _Running:
    endpoint: Endpoint
    matcher: re.Pattern[str]
    pacer: Pacer
    consumers: list[DurableConsumer]


class Deliverer:
    """Runs the consumers of the active endpoints on this replica."""

    def __init__(
        self,
        bus: Bus,
        config: BridgeConfig,
        store: EndpointStore,
        sender: Sender,
        attempts: Journal,
        dead_letters: Journal,
        forget: Forget | None = None,
    ) -> None:
        self.bus, self.streams = bus, durable(bus)
        self.config, self.store, self.sender = config, store, sender
        self.attempts, self.dead_letters = attempts, dead_letters
        self._forget_on_broker = forget
        self.events_topic = bus.topics.events()
        self.codec = EnvelopeCodec()
        self._running: dict[str, _Running] = {}
        self._lock = asyncio.Lock()
        self._random = random.Random()  # noqa: S311 - jitter, not security

    def replay_topic(self, endpoint_id: str) -> str:
        return self.bus.topics.webhooks(f"replay.{endpoint_id}")

    def consumers(self, endpoint_id: str) -> dict[str, str]:
        """An endpoint's durable consumers, topic -> name (group ids on Kafka, where
        the prefix keeps two gateways on one cluster apart)."""
        base = f"{self.bus.topics.prefix.replace('.', '_')}_wh_{endpoint_id}"
        return {self.events_topic: base, self.replay_topic(endpoint_id): base + "_replay"}

    async def apply(self, endpoint_id: str, endpoint: Endpoint | None) -> None:
        """Bring this replica in line with the stored endpoint (None: deleted)."""
        async with self._lock:
            running = self._running.get(endpoint_id)
            if endpoint is not None and endpoint.status == "active":
                if running is not None and self._same_consumers(running.endpoint, endpoint):
                    running.endpoint = endpoint
                    running.matcher = event_matcher(endpoint.events)
                    return
                if running is not None:
                    await self._stop(endpoint_id)
                await self._start(endpoint)
                return
            if running is not None:
                await self._stop(endpoint_id)
            if endpoint is None:
                await self._forget(endpoint_id)

    @staticmethod
    def _same_consumers(old: Endpoint, new: Endpoint) -> bool:
        return old.max_concurrency == new.max_concurrency and old.rate_per_s == new.rate_per_s

    async def _start(self, endpoint: Endpoint) -> None:
        running = _Running(endpoint, event_matcher(endpoint.events), Pacer(endpoint.rate_per_s), [])
        self._running[endpoint.id] = running

        async def on_event(message: Delivered) -> None:
            await self._deliver(running, message, replay=False)

        async def on_replay(message: Delivered) -> None:
            await self._deliver(running, message, replay=True)

        concurrency, ack_wait = endpoint.max_concurrency, self.config.redeliver_after_s
        if endpoint.rate_per_s:
            # A message waits for its turn after the broker handed it over; past
            # ack_wait it would come again. Hold no more than half of that in hand.
            concurrency = max(1, min(concurrency, int(endpoint.rate_per_s * ack_wait / 2)))
        (events, events_name), (replays, replays_name) = self.consumers(endpoint.id).items()
        started = await asyncio.gather(
            self.streams.consume(
                events,
                events_name,
                on_event,
                concurrency=concurrency,
                ack_wait_s=ack_wait,
                start="new",
            ),
            self.streams.consume(
                replays, replays_name, on_replay, concurrency=concurrency, ack_wait_s=ack_wait
            ),
            return_exceptions=True,
        )
        running.consumers = [c for c in started if isinstance(c, DurableConsumer)]
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed:
            await self._stop(endpoint.id)  # all or nothing; `reconcile` tries again
            raise failed[0]

    async def _stop(self, endpoint_id: str) -> None:
        running = self._running.pop(endpoint_id)
        # Attempts in flight get a moment; one hanging on a dead receiver is cut (and
        # made again, same webhook-id, after the endpoint resumes) so that pause and
        # delete answer at once.
        await asyncio.gather(*(c.stop(grace_s=_STOP_GRACE_S) for c in running.consumers))

    async def _forget(self, endpoint_id: str) -> None:
        if self._forget_on_broker is not None:
            try:
                await self._forget_on_broker(endpoint_id, self.consumers(endpoint_id))
            except Exception as exc:  # leftovers cost storage, not correctness
                log.warning("cleaning up after endpoint %s failed: %r", endpoint_id, exc)

    async def reconcile(self) -> None:
        """Apply the whole store again: catches up on a change whose apply failed (the
        broker was away) or that the watch missed."""
        stored = {e.id: e for e in await self.store.list()}
        for endpoint_id in set(self._running) - set(stored):
            if await self.store.get(endpoint_id) is None:  # not created since the list
                await self.apply(endpoint_id, None)
        for endpoint in stored.values():
            await self.apply(endpoint.id, endpoint)

    async def close(self) -> None:
        async with self._lock:
            for endpoint_id in list(self._running):
                await self._stop(endpoint_id)

    # ------------------------------------------------------------------ one message

    async def _deliver(self, running: _Running, message: Delivered, *, replay: bool) -> None:
        try:
            envelope = self.codec.decode(message.data)
        except CodecError as exc:
            log.error("dropping an undecodable event (seq %s): %s", message.sequence, exc)
            return
        name = event_type(envelope)
        if not replay and not running.matcher.fullmatch(name):
            return
        endpoint = running.endpoint
        if endpoint.status != "active":
            raise RetryLater(_PAUSED_RECHECK_S)
        await running.pacer.wait()
        outcome = await self.sender.send(
            endpoint, envelope.id, webhook_body(envelope), content_type="application/json"
        )
        attempt = message.attempt
        schedule = self.config.retry_schedule_s
        if outcome.ok:
            await self._record(
                endpoint, envelope, name, message, outcome, "delivered", replayed=replay
            )
            return
        if outcome.status == 410:
            await self._record(
                endpoint, envelope, name, message, outcome, "endpoint-disabled", replayed=replay
            )
            await self.store.modify(endpoint.id, _disabled_by_410)
            await self._dead_letter(endpoint, envelope, name, message, outcome)
            return
        if attempt >= len(schedule):
            await self._record(
                endpoint, envelope, name, message, outcome, "dead-lettered", replayed=replay
            )
            await self._dead_letter(endpoint, envelope, name, message, outcome)
            return
        await self._record(endpoint, envelope, name, message, outcome, "retry", replayed=replay)
        spread = 1.0 + self.config.jitter * (2 * self._random.random() - 1)
        raise RetryLater(schedule[attempt] * spread)

    async def _record(
        self,
        endpoint: Endpoint,
        envelope: Envelope,
        name: str,
        message: Delivered,
        outcome: Outcome,
        result: Result,
        *,
        replayed: bool,
    ) -> None:
        record = Attempt(
            endpoint_id=endpoint.id,
            event_id=envelope.id,
            event_type=name,
            attempt=message.attempt,
            at_ms=now_ms(),
            status=outcome.status,
            latency_ms=round(outcome.latency_ms, 3),
            outcome=result,
            error=outcome.error,
            response=outcome.response,
            event_seq=message.sequence,
            event_partition=message.partition,
            replayed=replayed,
        )
        try:
            await self.attempts.append(endpoint.id, record.model_dump_json().encode())
        except Exception as exc:  # the log is for people; never fail a delivery over it
            log.warning("recording an attempt for %s failed: %r", endpoint.id, exc)

    async def _dead_letter(
        self,
        endpoint: Endpoint,
        envelope: Envelope,
        name: str,
        message: Delivered,
        outcome: Outcome,
    ) -> None:
        record = {
            "endpoint_id": endpoint.id,
            "event_id": envelope.id,
            "event_type": name,
            "attempts": message.attempt,
            "at_ms": now_ms(),
            "error": outcome.error,
            "status": outcome.status,
            "envelope": base64.b64encode(message.data).decode(),
        }
        # A restart between this and the ack must not dead-letter the event twice.
        msg_id = f"{endpoint.id}.{message.topic}.{message.partition}.{message.sequence}"
        await self.dead_letters.append(endpoint.id, orjson.dumps(record), msg_id=msg_id)


def _disabled_by_410(endpoint: Endpoint) -> Endpoint:
    return endpoint.model_copy(
        update={
            "status": "disabled",
            "status_reason": "the endpoint answered 410 Gone",
            "updated_ms": now_ms(),
        }
    )
