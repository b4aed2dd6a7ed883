"""The async runner (`relaygate worker async`): takes accepted async requests from the
durable stream `<prefix>.async`, runs each through its route's existing worker as an
ordinary bus request, and stores the reply as the result.

Re-issuing the request, rather than running handlers in-process, is what lets every
worker (echo, routing, a team's SDK worker) serve async routes unchanged, and keeps the
runner one small process of its own kind that scales apart from the workers.

At least once: a message is acknowledged only after its result is stored, so a runner
killed mid-request leaves it to be taken again (after `ack_wait_s`, or at once on Kafka
when the group rebalances). A result already stored is not run again. A request whose
worker does not answer (nobody listening, timeout, bus down) is retried with backoff, up
to `async_requests.max_attempts` runs, then its result is that 503 or 504 problem. The
request envelope carries the async id as `idempotencykey`, for workers that dedupe.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from contracts import problems
from contracts.asyncresults import TIMEOUT_HEADER, TOPIC_HEADER, Answer, open_results
from contracts.bus import Backpressure, Bus, NoResponders, NotConnected, RequestTimeout
from contracts.bus.streams import Delivered, DurableConsumer, RetryLater, durable
from contracts.codec import CodecError, EnvelopeCodec
from contracts.config import Config
from contracts.envelope import new_id, now_ms
from contracts.keyvalue import Bucket

log = logging.getLogger("relaygate.worker.async")

DURABLE = "async-runner"
_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class AsyncRunner:
    def __init__(self, config: Config, bus: Bus, results: Bucket) -> None:
        self.bus = bus
        self.results = results
        self.codec = EnvelopeCodec()
        self.options = config.async_requests
        self.source = f"relaygate://async-runner/{bus.node_id}"
        timeouts = [r.timeout_ms for r in config.routes if r.timeout_ms is not None]
        longest_s = max([config.ingress.timeout_ms, *timeouts]) / 1000
        # A message must not come back while its request may still be running.
        self.ack_wait_s = max(30.0, 2 * longest_s + 5)
        self.consumer: DurableConsumer | None = None

    async def start(self) -> None:
        self.consumer = await durable(self.bus).consume(
            self.bus.topics.async_requests(),
            DURABLE,
            self.handle,
            concurrency=self.options.concurrency,
            ack_wait_s=self.ack_wait_s,
        )

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    async def handle(self, message: Delivered) -> None:
        try:
            request = self.codec.decode(message.data)
        except CodecError:
            log.error("async request %s is not an envelope; dropped", message.sequence)
            return
        async_id = request.id
        entry = await self.results.get(async_id)
        stored = None if entry is None else Answer.decode(entry.value)
        if stored is not None and stored.done:
            return  # a redelivery after the result was stored
        headers = message.headers or {}
        topic = headers.get(TOPIC_HEADER)
        timeout_ms = int(headers.get(TIMEOUT_HEADER) or 30_000)
        owner = request.principal.subject if request.principal is not None else None
        if topic is None:
            await self._store(async_id, _problem(500, "bad-async-request", "no topic"), owner)
            return
        correlation = new_id()
        envelope = replace(
            request,
            correlationid=correlation,
            replyto=self.bus.reply_address(correlation),
            deadline=now_ms() + timeout_ms,
            idempotencykey=async_id,
            attempt=message.attempt,
        )
        try:
            reply_message = await self.bus.request(
                topic,
                self.codec.encode(envelope),
                correlation_id=correlation,
                timeout=timeout_ms / 1000,
            )
        except (NoResponders, RequestTimeout, Backpressure, NotConnected) as exc:
            if message.attempt < self.options.max_attempts:
                delay = _BACKOFF_S[min(message.attempt, len(_BACKOFF_S)) - 1]
                log.info("async %s on %s: %r; again in %.1fs", async_id, topic, exc, delay)
                raise RetryLater(delay) from None
            answer = (
                _problem(504, "deadline-exceeded", f"no reply from {topic} in {timeout_ms} ms")
                if isinstance(exc, RequestTimeout)
                else _problem(503, "no-worker", f"no worker answered on {topic}: {exc}")
            )
            await self._store(async_id, answer, owner)
            return
        try:
            reply = self.codec.decode(reply_message.data)
        except CodecError:
            reply = None
        if reply is None or reply.http is None or not 100 <= reply.http.status <= 599:
            answer = _problem(502, "bad-reply", f"the worker on {topic} sent no HTTP status")
        elif len(reply.data) > self.options.max_body_bytes:
            answer = _problem(502, "result-too-large", "the result is above max_body_bytes")
        else:
            answer = Answer("done", now_ms(), reply.http.status, reply.http.headers, reply.data)
        await self._store(async_id, answer, owner)

    async def _store(self, async_id: str, answer: Answer, owner: str | None) -> None:
        """Store, then tell the ingress nodes (a lost notice only delays a waiter)."""
        answer.owner = owner
        await self.results.put(async_id, answer.encode())
        try:
            await self.bus.publish(self.bus.topics.async_done(), async_id.encode())
        except Exception as exc:  # the result is stored; waiters poll the store too
            log.warning("async %s: notice not sent: %r", async_id, exc)


def _problem(status: int, slug: str, detail: str) -> Answer:
    body = problems.problem(status, slug, slug.replace("-", " ").capitalize(), detail)
    return Answer("done", now_ms(), status, [("content-type", problems.CONTENT_TYPE)], body)


async def start_async_runner(config: Config, bus: Bus, redis: Any | None) -> AsyncRunner:
    runner = AsyncRunner(config, bus, await open_results(config, bus, redis))
    await runner.start()
    return runner
