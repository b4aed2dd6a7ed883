"""Turns request envelopes into reply envelopes around a handler, whatever carries them.

Decodes, skips envelopes whose deadline has passed, calls the handler, and makes
any handler failure a 500 problem reply: a caller never hangs on a worker bug.
Each message is observed: a CONSUMER span continuing the envelope's trace (when
tracing is on), log lines carrying its correlation and trace ids, and metrics.
WebSocket envelopes (`ws.open`, `ws.message`, `ws.close`) go to the socket handler;
what it returns is sent back to the connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from contracts import websocket as ws
from contracts.codec import CodecError, EnvelopeCodec
from contracts.envelope import REQUEST, Envelope, now_ms
from contracts.telemetry import logs, tracing
from contracts.telemetry.metrics import (
    WORKER_DROPPED,
    WORKER_DURATION,
    WORKER_IN_FLIGHT,
    WORKER_QUEUE_DELAY,
    WORKER_REQUESTS,
    MeterCache,
)
from contracts.telemetry.tracing import CONSUMER, Span, Tracer
from workers.sdk.messages import Request, Response
from workers.sdk.sockets import SocketEvent, SocketHandlerFn, Sockets

log = logging.getLogger("relaygate.worker")

HandlerFn = Callable[[Request], Awaitable[Response]]

_EXPIRED = WORKER_DROPPED.labels("expired")
_UNDECODABLE = WORKER_DROPPED.labels("undecodable")


@dataclass(slots=True, frozen=True)
class Reply:
    address: str
    correlation_id: str
    data: bytes


class EnvelopeProcessor:
    """`process(bytes) -> Reply | None`, plus counters a worker exposes. `topic` (the
    subscription's, set by whoever subscribes) names the CONSUMER spans."""

    def __init__(
        self,
        handler: HandlerFn | None,
        *,
        codec: EnvelopeCodec,
        source: str,
        topic: str = "",
        on_socket: SocketHandlerFn | None = None,
        sockets: Sockets | None = None,
    ) -> None:
        self.handler = handler
        self.codec = codec
        self.source = source
        self.topic = topic
        self.on_socket = on_socket
        # Set by the runtime once it can publish (it needs the broker's connection).
        self.sockets = sockets
        self.system = ""  # messaging.system of the spans: nats, kafka
        # Whether the handler may make spans with the OpenTelemetry API: then the
        # CONSUMER span is also its current span (~2 µs); the built-in workers' are ours.
        self.otel_api = True
        self.expired = 0
        self.failed = 0
        self.undecodable = 0
        self._meters = MeterCache(requests=WORKER_REQUESTS, duration=WORKER_DURATION)
        self._delays: dict[str, Any] = {}

    async def process(self, data: bytes) -> Reply | None:
        try:
            envelope = self.codec.decode(data)
        except CodecError as exc:
            self.undecodable += 1
            _UNDECODABLE.inc()
            log.warning("dropping undecodable message: %s", exc)
            return None
        if envelope.type in ws.TO_WORKER:
            await self._socket(envelope)
            return None
        now = now_ms()
        if envelope.expired(now):
            # Nobody waits for this any more; doing the work would only add load.
            self.expired += 1
            _EXPIRED.inc()
            return None
        token = logs.bind(envelope.correlationid, logs.trace_id_of(envelope.traceparent))
        tracer = tracing.tracer()
        span = span_token = otel_token = None
        if tracer is not None:
            span = self._consumer_span(tracer, envelope)
            span_token = tracing.use(span)
            if self.otel_api:
                otel_token = tracing.otel_attach(span)
        meters = self._meters.route(envelope.subject)
        self._delay(meters.route).observe(max(0, now - envelope.time) / 1000)
        WORKER_IN_FLIGHT.count += 1
        started = time.perf_counter()
        try:
            response = await self._handle(envelope)
            meters.done(response.status, time.perf_counter() - started)
            if span is not None and response.status >= 500:
                span.set_error(f"status {response.status}")
        finally:
            WORKER_IN_FLIGHT.count -= 1
            if span is not None:
                if otel_token is not None:
                    tracing.otel_detach(otel_token)
                if span_token is not None:
                    tracing.restore(span_token)
                span.end()
            logs.unbind(token)
        if envelope.type != REQUEST or not envelope.replyto:
            return None
        reply = envelope.reply(
            status=response.status, headers=response.headers, data=response.body, source=self.source
        )
        return Reply(envelope.replyto, envelope.correlationid, self.codec.encode(reply))

    async def _handle(self, envelope: Envelope) -> Response:
        if self.handler is None:
            return Response.problem(
                501,
                "no-http-handler",
                "Not implemented",
                f"the worker of {envelope.subject or 'this route'} only serves WebSockets",
                correlation_id=envelope.correlationid,
            )
        try:
            return await self.handler(Request(envelope))
        except Exception as exc:
            self.failed += 1
            log.exception(
                "handler failed for %s (correlation id %s)",
                envelope.subject,
                envelope.correlationid,
            )
            return Response.problem(
                500,
                "worker-error",
                "The worker failed",
                f"{type(exc).__name__} in the handler of {envelope.subject or 'this route'}",
                correlation_id=envelope.correlationid,
            )

    async def _socket(self, envelope: Envelope) -> None:
        sockets = self.sockets
        if self.on_socket is None or sockets is None:
            self.undecodable += 1
            log.warning("no socket handler for %s on %s", envelope.type, envelope.subject)
            return
        token = logs.bind(envelope.correlationid, logs.trace_id_of(envelope.traceparent))
        try:
            answer = await self.on_socket(SocketEvent(envelope), sockets)
            if answer is not None and envelope.type != ws.CLOSE:
                await sockets.send(envelope.correlationid, answer)
        except Exception:
            self.failed += 1
            log.exception(
                "socket handler failed for %s (connection %s)",
                envelope.subject,
                envelope.correlationid,
            )
        finally:
            logs.unbind(token)

    def _delay(self, route: str) -> Any:
        child = self._delays.get(route)
        if child is None:
            child = self._delays[route] = WORKER_QUEUE_DELAY.labels(route)
        return child

    def _consumer_span(self, tracer: Tracer, envelope: Envelope) -> Span:
        """The CONSUMER span of one message, a child of the span the envelope names."""
        topic = self.topic or envelope.subject or ""
        return tracer.start(
            f"process {topic}",
            CONSUMER,
            {
                "messaging.system": self.system,
                "messaging.destination.name": topic,
                "messaging.operation": "process",
                "messaging.operation.type": "process",
                "messaging.message.id": envelope.id,
                "messaging.message.conversation_id": envelope.correlationid,
            },
            tracing.parse_traceparent(envelope.traceparent, envelope.tracestate),
        )
