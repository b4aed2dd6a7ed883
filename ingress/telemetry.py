"""What the ingress records per request: the SERVER span (its context goes into the
envelope), the access-log line and the route's metrics. Built once per app; per
request, `start(head, send)` returns a `RequestWatch` whose `send` sees the response
go by and whose `finish()` records it."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from contextvars import Token
from typing import Any

from contracts.config import Config
from contracts.envelope import first_header
from contracts.telemetry import logs, tracing
from contracts.telemetry.logs import AccessLog
from contracts.telemetry.metrics import (
    CACHE_LOOKUPS,
    HTTP_IN_FLIGHT,
    RATE_LIMIT_DECISIONS,
    MeterCache,
    RouteMeters,
)
from contracts.telemetry.tracing import SERVER, Span, Tracer
from ingress.request import RequestHead
from ingress.responses import Send


class IngressTelemetry:
    """The per-app part: the tracer and access log in force, meters per route."""

    __slots__ = ("access", "meters", "templates", "tracer")

    def __init__(self, config: Config) -> None:
        self.tracer = tracing.tracer()
        self.access: AccessLog | None = logs.access_log()
        self.meters = MeterCache(route.name for route in config.routes)
        self.templates: dict[str, str] = {}
        self.reload(config)

    def reload(self, config: Config) -> None:
        self.templates = {route.name: route.when.path for route in config.routes}

    def start(self, head: RequestHead, send: Send | None = None) -> RequestWatch:
        """Start watching a request. With tracing on, its SERVER span becomes the
        current span and `head.traceparent` names it, so the envelope carries it.
        Without `send` (the lane), the caller sets `status` and `bytes` itself."""
        return RequestWatch(self, head, send)


class RequestWatch:
    __slots__ = (
        "_send",
        "_span",
        "_started",
        "_token",
        "bytes",
        "cache",
        "head",
        "log_token",
        "ratelimit",
        "status",
        "telemetry",
    )

    def __init__(self, telemetry: IngressTelemetry, head: RequestHead, send: Send | None) -> None:
        self._started = time.perf_counter()
        self.telemetry = telemetry
        self.head = head
        self._send = send
        self.status = 0
        self.bytes = 0
        self.cache = ""
        self.ratelimit = ""
        self._span: Span | None = None
        self._token: Token[Span | None] | None = None
        HTTP_IN_FLIGHT.count += 1
        tracer = telemetry.tracer
        if tracer is not None:
            self._start_span(tracer, head)
        self.log_token = logs.bind(head.correlation, logs.trace_id_of(head.traceparent))

    def _start_span(self, tracer: Tracer, head: RequestHead) -> None:
        # read_head made up a traceparent when the client sent none: its random trace id
        # starts the trace. A client's valid one is continued.
        sent = first_header(head.headers, "traceparent")
        parent = tracing.parse_traceparent(sent, head.tracestate) if sent else None
        attributes: dict[str, Any] = {
            "http.request.method": head.method,
            "url.path": head.path,
            "url.scheme": head.scheme,
            "server.address": head.hostname,
            "client.address": head.client_ip,
        }
        if head.query:
            attributes["url.query"] = logs.redactor().query(head.query)
        if sent is None:
            span = tracer.start_root(head.method, SERVER, attributes, head.traceparent[3:35])
        else:  # continued, or (a header we cannot use) a new trace
            span = tracer.start(head.method, SERVER, attributes, parent)
        self._span = span
        self._token = tracing.use(span)
        head.traceparent, head.tracestate = span.traceparent(), span.tracestate

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message["headers"]:
                if name == b"x-cache":
                    self.cache = value.decode("latin-1")
                elif name == b"ratelimit-policy":
                    self.ratelimit = "limited" if self.status == 429 else "allowed"
        else:
            self.bytes += len(message.get("body", b""))
        assert self._send is not None
        await self._send(message)

    def finish(self) -> None:
        """Record the request (no response started: it failed, count a 500)."""
        seconds = time.perf_counter() - self._started
        HTTP_IN_FLIGHT.count -= 1
        logs.unbind(self.log_token)
        head = self.head
        status = self.status or 500
        meters: RouteMeters = self.telemetry.meters.route(head.route)
        meters.done(status, seconds)
        if self.cache:
            meters.outcome(CACHE_LOOKUPS, self.cache)
        if self.ratelimit:
            meters.outcome(RATE_LIMIT_DECISIONS, self.ratelimit)
        span = self._span
        if span is not None:
            self._end_span(span, status, head)
        access = self.telemetry.access
        if access is not None:
            self._log(access, status, seconds)

    def _end_span(self, span: Span, status: int, head: RequestHead) -> None:
        template = self.telemetry.templates.get(head.route or "")
        attributes = span.attributes
        if template is not None:
            span.name = f"{head.method} {template}"
            attributes["http.route"] = template
        attributes["http.response.status_code"] = status
        if status >= 500:
            span.set_error()
            attributes["error.type"] = str(status)
        if self._token is not None:
            tracing.restore(self._token)
        span.end()

    def _log(self, access: AccessLog, status: int, seconds: float) -> None:
        # Values only, in ACCESS_FIELDS order: the writer thread makes the line.
        head = self.head
        access.write((
            time.time(), head.route, head.method, head.path, status, seconds, self.bytes,
            head.correlation, head.traceparent, head.principal, head.client_ip, self.cache,
            self.ratelimit,
        ))  # fmt: skip
