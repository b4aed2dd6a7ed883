"""The data plane: a plain ASGI app (no framework on the hot path, see DESIGN.md's
measured costs). Match a route, wrap the request in an envelope, request over the
bus, answer with the worker's reply matched by correlation id."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from contracts.bus import (
    Backpressure,
    Bus,
    NoResponders,
    NotConnected,
    PayloadTooLarge,
    RequestTimeout,
)
from contracts.codec import CodecError, EnvelopeCodec
from contracts.config import Config, ConfigError
from contracts.envelope import (
    REQUEST,
    Envelope,
    HttpInfo,
    Principal,
    first_header,
    new_id,
    now_ms,
)
from contracts.events import EventRegistry, RegistryError
from ingress.admission import Admission
from ingress.async_requests import AsyncRequests
from ingress.cache import Cached, CacheKey, MemoryCacheStore, RedisCacheStore, ResponseCache
from ingress.event_lane import EventLane
from ingress.events import EventIntake
from ingress.forwarded import TrustedProxies
from ingress.policies import EdgePolicy, PolicyState, RequestContext, TierResolver
from ingress.policies.security_headers import SecurityHeaders
from ingress.request import Refused, RequestHead, read_head
from ingress.responses import Headers, Send, UpstreamRules, send_problem, send_reply
from ingress.routes import CompiledRoute, RouteTable
from ingress.telemetry import IngressTelemetry
from ingress.transport import check_json_depth
from ingress.transport.lane import BodyTooLarge, Disconnected
from ingress.ws import WebSockets

log = logging.getLogger("relaygate.ingress")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
# A resource the gateway serves itself on the data plane (OAuth endpoints, JWKS, …):
# exact path -> plain ASGI handler, answered before routing and without a bus hop.
Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]
# Reads a request's whole body: BodyTooLarge above the limit given, Disconnected if cut.
ReadBody = Callable[[int], Awaitable[bytes]]


@dataclass(slots=True)
class IngressStats:
    requests: int = 0
    replies: int = 0
    no_route: int = 0
    too_large: int = 0
    no_responders: int = 0
    timeouts: int = 0
    shed: int = 0  # the pending-reply map was full
    admission_shed: int = 0  # over the concurrency limit and its queue (admission)
    client_rate_shed: int = 0  # over the per-client request rate (admission)
    preflights: int = 0  # CORS preflights answered at the ingress
    bus_errors: int = 0
    rejected: int = 0  # by an edge policy
    cache_hits: int = 0  # answered from the response cache, fresh or stale


class IngressApp:
    """ASGI 3 application for HTTP routes. Build once per config; `reload` swaps
    the route table atomically (a request sees the old table or the new one)."""

    def __init__(self, config: Config, bus: Bus, codec: EnvelopeCodec | None = None) -> None:
        self.bus = bus
        self.codec = codec or EnvelopeCodec()
        self.stats = IngressStats()
        self.source = f"relaygate://ingress/{bus.node_id}"
        self.retry_after = str(config.ingress.retry_after_s).encode()
        self.max_json_depth = config.ingress.limits.max_json_depth or 0
        self.policy_state = PolicyState(config)  # stores outlive reloads
        self.tiers = TierResolver(config)
        self.table = self._table(config)
        self.proxies = _proxies(config)
        self.admission = _admission(config, self.retry_after)
        self.endpoints: dict[str, Endpoint] = {}
        self.telemetry = IngressTelemetry(config)
        self.websockets = WebSockets(self)
        shared = self.policy_state.shared  # the cache outlives reloads too
        self.cache = ResponseCache(
            RedisCacheStore(shared.redis, config.bus.prefix)
            if shared is not None
            else MemoryCacheStore(config.ingress.cache_max_bytes)
        )
        self.async_requests: AsyncRequests | None = None
        self._async(config)
        self.events = self._events(config)
        self.lane = EventLane(self)  # claims event intake requests only while `events` is set

    def _events(self, config: Config) -> EventIntake | None:
        """Event intake (ingress/events.py) when the config accepts event types; a schema
        that cannot be used stops the node with a ConfigError naming it."""
        if not config.events.types:
            return None
        try:
            registry = EventRegistry.load(config.events)
        except RegistryError as exc:
            raise ConfigError("events", exc.problems) from None
        policies = self.policy_state.build(config, [*config.policies, *config.events.policies])
        return EventIntake(config, self.bus, self.codec, registry, policies)

    def _async(self, config: Config) -> None:
        """Async requests and idempotency keys (ingress/async_requests.py), when used."""
        if self.async_requests is not None:
            self.async_requests.reload(config)
        elif config.uses_async() or config.idempotency.enabled:
            shared = self.policy_state.shared
            self.async_requests = AsyncRequests(
                config, self.bus, self.codec, shared.redis if shared else None, self._request
            )
        if self.async_requests is not None:
            self.async_requests.policies = self.policy_state.build(
                config, [*config.policies, *config.async_requests.policies]
            )

    def _table(self, config: Config) -> RouteTable:
        return RouteTable(config, lambda specs: self.policy_state.build(config, specs))

    def reload(self, config: Config) -> None:
        events = self._events(config)  # first: a schema that fails leaves all as it was
        self.tiers = TierResolver(config)
        self.table = self._table(config)
        self.retry_after = str(config.ingress.retry_after_s).encode()
        self.proxies = _proxies(config)
        admission = _admission(config, self.retry_after)
        if (
            admission is None
            or self.admission is None
            or admission.settings != self.admission.settings
        ):
            self.admission = admission  # requests in flight leave the one they entered
        self.telemetry.reload(config)
        self._async(config)
        self.events = events

    async def aclose(self) -> None:
        await self.websockets.aclose()
        if self.async_requests is not None:
            await self.async_requests.aclose()
        await self.policy_state.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self.websockets.serve(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.requests += 1
        if self.endpoints:
            endpoint = self.endpoints.get(scope["path"])
            if endpoint is not None:
                security = self.table.security
                if security is not None:
                    send = _adding(send, security.own(scope.get("scheme", "http")))
                await endpoint(scope, receive, send)
                return
        head = read_head(scope, self.bus.pending, self.proxies)
        watch = self.telemetry.start(head, send)  # span, access log, metrics
        send = watch.send
        try:
            if self.admission is None:
                await self._serve(head, receive, send)
            else:
                await self._admitted(self.admission, head, receive, send)
        except Refused as problem:
            await self._problem(send, head, problem, self.table.security)
        finally:
            watch.finish()

    async def _admitted(
        self, admission: Admission, head: RequestHead, receive: Receive, send: Send
    ) -> None:
        """Serve within the admission limits (see ingress/admission.py)."""
        await self.enter(admission, head)
        try:
            await self._serve(head, receive, send)
        finally:
            admission.leave()

    async def enter(self, admission: Admission, head: RequestHead) -> None:
        """Wait for a place within the admission limits, or raise the refusal (counted);
        the caller leaves once answered."""
        tier = self.tiers(None, head.headers, head.client_ip) if admission.priorities else None
        try:
            await admission.enter(head.client_ip, tier)
        except Refused as refusal:
            if refusal.status == 429:
                self.stats.client_rate_shed += 1
            else:
                self.stats.admission_shed += 1
            raise

    async def _problem(
        self, send: Send, head: RequestHead, problem: Refused, security: SecurityHeaders | None
    ) -> None:
        headers = problem.headers
        if security is not None:
            headers = [*headers, *security.own(head.scheme)]
        await send_problem(
            send,
            problem.status,
            problem.slug,
            problem.title,
            problem.detail,
            head.cid,
            instance=head.path,
            extra_headers=headers,
        )

    async def _serve(self, head: RequestHead, receive: Receive, send: Send) -> None:
        """Answer a CORS preflight, or route and forward. The problems of a routed
        request carry its route's CORS and security headers."""
        if head.method == "OPTIONS" and self.table.cors and await self._preflight(head, send):
            return
        intake = self.events
        if intake is not None and head.path.startswith(intake.prefix):
            await self._event(intake, head, receive, send)
            return
        deferred = self.async_requests
        if deferred is not None and head.path.startswith(deferred.results_prefix):
            head.route = "results"
            extra, principal = await self.run_named_policies("results", deferred.policies, head)
            security = self.table.security
            if security is not None:
                extra.extend(security.own(head.scheme))
            await deferred.result(head, send, extra, principal)
            return
        route, params = self._route(head)
        if route.cors is None and route.security is None:
            await self._forward(route, params, head, receive, send, [])
            return
        cors = route.cors.actual(first_header(head.headers, "origin")) if route.cors else []
        try:
            await self._forward(route, params, head, receive, send, list(cors))
        except Refused as problem:
            problem.headers = [*problem.headers, *cors]
            await self._problem(send, head, problem, route.security)

    async def _preflight(self, head: RequestHead, send: Send) -> bool:
        """Answer an OPTIONS preflight for a route with `cors:` here, without a bus
        hop; False when it is not one (then it is an ordinary OPTIONS request)."""
        origin = first_header(head.headers, "origin")
        method = first_header(head.headers, "access-control-request-method")
        if origin is None or method is None:
            return False
        matched = self.table.match(method, head.hostname, head.path, head.headers)
        if not isinstance(matched, tuple):
            return False
        route = matched[0]
        cors = route.cors
        if cors is None:
            return False
        self.stats.preflights += 1
        requested = first_header(head.headers, "access-control-request-headers")
        headers = cors.preflight(origin, method, requested)
        if headers is None:
            self.stats.rejected += 1
            refusal = Refused(
                403,
                "cors-refused",
                "Cross-origin request refused",
                f"origin {origin} may not send {method} with headers [{requested or ''}] "
                f"to route {route.name}",
            )
            await self._problem(send, head, refusal, route.security)
            return True
        headers.append((b"x-correlation-id", head.cid))
        if route.security is not None:
            headers.extend(route.security.own(head.scheme))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return True

    async def _forward(
        self,
        route: CompiledRoute,
        params: dict[str, str],
        head: RequestHead,
        receive: Receive,
        send: Send,
        extra: Headers,
    ) -> None:
        """Run the edge policies, read the body, answer from the cache or over the bus.
        Each step raises `Refused` to answer with a problem instead; `extra` headers go
        on the response."""
        principal: Principal | None = None
        rules = route.security.proxied(head.scheme) if route.security is not None else None
        if route.policies:
            headers, principal = await self.run_policies(route, head)
            extra.extend(headers)
        if principal is None and head.tls_subject is not None:
            # Mutual TLS: the verified client certificate names a caller nothing else did.
            tier = self.tiers(None, head.headers, head.client_ip)
            principal = Principal(head.tls_subject, tier=tier, authmethod="mtls")
            head.principal = head.tls_subject
        body = await self._body(route, head, receive)
        envelope = self._envelope(route, params, head, body, principal)
        deferred = self.async_requests
        if deferred is not None and await deferred.serve(route, envelope, head, send, extra, rules):
            return
        options = route.route.cache
        cache_key: CacheKey | None = None
        request: dict[str, str] = {}
        if options is not None and head.method in ("GET", "HEAD"):
            request = _header_map(head.headers)
            cache_key = self.cache.key(
                route.name, options, head.path, head.query, request, principal
            )
            if cache_key is not None:
                cached = await self.cache.lookup(cache_key, request)
                if cached is not None:
                    if cached.state == "stale":
                        key = cache_key
                        self.cache.refresh_once(
                            cached.key, lambda: self._refresh(route, envelope, key, request)
                        )
                    await self._send_cached(send, cached, request, head, extra, rules)
                    return
                extra.append((b"x-cache", b"miss"))
        reply = await self._request(route, envelope)
        http = reply.http
        assert http is not None  # _request refuses replies without one
        if cache_key is not None and options is not None and head.method == "GET":
            await self.cache.store(
                cache_key, options, request, http.status, http.headers, reply.data
            )
        await send_reply(
            send,
            http.status,
            http.headers,
            reply.data,
            head.cid,
            head=head.method == "HEAD",
            extra=extra,
            rules=rules,
        )

    def _route(self, head: RequestHead) -> tuple[CompiledRoute, dict[str, str]]:
        matched = self.table.match(head.method, head.hostname, head.path, head.headers)
        if isinstance(matched, tuple):
            head.route = matched[0].name
            return matched
        self.stats.no_route += 1
        if matched:
            raise Refused(
                405,
                "method-not-allowed",
                "Method not allowed",
                f"{head.method} is not allowed on {head.path}",
                [(b"allow", ", ".join(sorted(matched)).encode())],
            )
        raise Refused(404, "no-route", "No route", f"no route matches {head.method} {head.path}")

    @staticmethod
    def http_info(head: RequestHead, params: dict[str, str]) -> HttpInfo:
        """The HTTP side of a request's envelope, as the ingress read it."""
        client = head.client
        return HttpInfo(
            method=head.method,
            scheme=head.scheme,
            host=head.host,
            path=head.path,
            query=head.query,
            headers=head.headers,
            client=f"{client[0]}:{client[1]}" if client else "",
            params=params,
        )

    async def _event(
        self, intake: EventIntake, head: RequestHead, receive: Receive, send: Send
    ) -> None:
        """`POST <events.path>/<type>` over ASGI (the lane's way is ingress/event_lane.py)."""
        status, own, payload, extra = await self.answer_event(
            intake, head, partial(_read_body, receive)
        )
        await send({"type": "http.response.start", "status": status, "headers": own + extra})
        await send({"type": "http.response.body", "body": payload})

    async def answer_event(
        self, intake: EventIntake, head: RequestHead, read: ReadBody
    ) -> tuple[int, Headers, bytes, Headers]:
        """An event's steps on either path: the intake's policies, the body (`read(limit)`),
        the intake. Its status, own headers, body, and the headers policies and config
        add; `Refused` for a problem."""
        head.route = "events"
        extra: Headers = []
        principal: Principal | None = None
        if intake.policies:
            extra, principal = await self.run_named_policies("events", intake.policies, head)
        body = await self._limited_body(read, head, intake.max_body_bytes, "event intake")
        security = self.table.security
        if security is not None:
            extra.extend(security.own(head.scheme))
        status, own, payload = await intake.answer(head, body, principal)
        return status, own, payload, extra

    async def run_policies(
        self, route: CompiledRoute, head: RequestHead
    ) -> tuple[list[tuple[bytes, bytes]], Principal | None]:
        return await self.run_named_policies(route.name, route.policies, head)

    async def run_named_policies(
        self, name: str, policies: tuple[EdgePolicy, ...], head: RequestHead
    ) -> tuple[list[tuple[bytes, bytes]], Principal | None]:
        """Run the policies in order; the first rejection ends the run. The
        headers of every policy that ran go on the response either way. Returns them
        with the principal an authentication policy established, if any."""
        client_ip = head.client_ip
        context = RequestContext(
            name,
            head.method,
            head.path,
            head.headers,
            client_ip,
            self.tiers(None, head.headers, client_ip),
        )
        merged: list[tuple[bytes, bytes]] = []
        for policy in policies:
            verdict = await policy(context)
            if verdict.rejection is not None:
                self.stats.rejected += 1
                raise verdict.rejection
            merged.extend(verdict.headers)
        if context.principal is not None:
            head.principal = context.principal.subject
        return merged, context.principal

    async def _body(self, route: CompiledRoute, head: RequestHead, receive: Receive) -> bytes:
        return await self._limited_body(
            partial(_read_body, receive), head, route.max_body_bytes, f"route {route.name}"
        )

    async def _limited_body(
        self, read: ReadBody, head: RequestHead, limit: int, what: str
    ) -> bytes:
        declared = head.content_length
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge
            body = await read(limit)
        except BodyTooLarge:
            self.stats.too_large += 1
            raise Refused(
                413,
                "body-too-large",
                "Request body too large",
                f"{what} accepts at most {limit} bytes",
            ) from None
        except Disconnected:
            raise _incomplete() from None
        if body and self.max_json_depth:
            check_json_depth(body, head.headers, self.max_json_depth)
        return body

    def _envelope(
        self,
        route: CompiledRoute,
        params: dict[str, str],
        head: RequestHead,
        body: bytes,
        principal: Principal | None = None,
    ) -> Envelope:
        now = now_ms()
        return Envelope(
            id=new_id(),
            source=self.source,
            type=REQUEST,
            time=now,
            subject=route.name,
            data=body,
            correlationid=head.correlation,
            replyto=self.bus.reply_address(head.correlation),
            deadline=now + route.timeout_ms,
            traceparent=head.traceparent,
            tracestate=head.tracestate,
            principal=principal,
            http=self.http_info(head, params),
        )

    async def _request(self, route: CompiledRoute, envelope: Envelope) -> Envelope:
        """The worker's reply, or `Refused` with the problem the bus failure maps to."""
        stats = self.stats
        try:
            message = await self.bus.request(
                route.topic,
                self.codec.encode(envelope),
                correlation_id=envelope.correlationid,
                timeout=route.timeout_s,
            )
            reply = self.codec.decode(message.data)
        except NoResponders:
            stats.no_responders += 1
            raise Refused(
                503, "no-worker", "No worker available", f"no worker listens on {route.topic}"
            ) from None
        except RequestTimeout:
            stats.timeouts += 1
            raise Refused(
                504,
                "deadline-exceeded",
                "Deadline exceeded",
                f"no reply from {route.topic} within {route.timeout_ms} ms",
            ) from None
        except Backpressure:
            stats.shed += 1
            raise Refused(
                503,
                "overloaded",
                "Too many requests in flight",
                "the gateway is at its pending-reply limit; retry shortly",
                [(b"retry-after", self.retry_after)],
            ) from None
        except PayloadTooLarge as exc:
            stats.too_large += 1
            raise Refused(
                413,
                "body-too-large",
                "Request body too large",
                f"the message is above the bus limit: {exc}",
            ) from None
        except (NotConnected, CodecError) as exc:
            stats.bus_errors += 1
            log.warning("bus failure on %s: %s", route.name, exc)
            raise Refused(
                503,
                "bus-unavailable",
                "Message bus unavailable",
                str(exc),
                [(b"retry-after", self.retry_after)],
            ) from None
        stats.replies += 1
        if reply.http is None or not 100 <= reply.http.status <= 599:
            raise Refused(
                502,
                "bad-reply",
                "Bad reply from worker",
                f"the worker on {route.topic} sent no HTTP status",
            )
        return reply

    async def _send_cached(
        self,
        send: Send,
        cached: Cached,
        request: dict[str, str],
        head: RequestHead,
        extra: list[tuple[bytes, bytes]],
        rules: UpstreamRules | None,
    ) -> None:
        self.stats.cache_hits += 1
        headers = [(b"age", str(cached.age_s).encode()), (b"x-cache", cached.state.encode())]
        headers.extend(extra)
        if cached.not_modified(request):
            await send_reply(
                send, 304, cached.validators(), b"", head.cid, extra=headers, rules=rules
            )
        else:
            await send_reply(
                send,
                cached.status,
                cached.headers,
                cached.body,
                head.cid,
                head=head.method == "HEAD",
                extra=headers,
                rules=rules,
            )

    async def _refresh(
        self, route: CompiledRoute, envelope: Envelope, key: CacheKey, request: dict[str, str]
    ) -> None:
        """stale-while-revalidate: the same request as a plain GET, its reply stored."""
        options = route.route.cache
        assert envelope.http is not None
        assert options is not None
        correlation = new_id()
        http = replace(
            envelope.http,
            method="GET",
            headers=[(n, v) for n, v in envelope.http.headers if n not in _CONDITIONAL],
        )
        fresh = replace(
            envelope,
            id=new_id(),
            correlationid=correlation,
            replyto=self.bus.reply_address(correlation),
            deadline=now_ms() + route.timeout_ms,
            http=http,
        )
        message = await self.bus.request(
            route.topic,
            self.codec.encode(fresh),
            correlation_id=correlation,
            timeout=route.timeout_s,
        )
        reply = self.codec.decode(message.data)
        if reply.http is not None:
            await self.cache.store(
                key, options, request, reply.http.status, reply.http.headers, reply.data
            )


_CONDITIONAL = frozenset({"if-none-match", "if-modified-since"})


def _proxies(config: Config) -> TrustedProxies | None:
    cidrs = config.caller.trusted_proxies
    return TrustedProxies(cidrs) if cidrs else None


def _admission(config: Config, retry_after: bytes) -> Admission | None:
    options = config.admission
    if options.max_concurrency is None and options.per_client is None:
        return None
    return Admission(options, config.tiers, retry_after)


def _adding(send: Send, headers: Headers) -> Send:
    """`send` with `headers` added to the response start."""

    async def adding(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *headers]}
        await send(message)

    return adding


def _header_map(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Request headers by name; repeated fields joined as RFC 9110 §5.3 allows."""
    fields: dict[str, str] = {}
    for name, value in headers:
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return fields


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    if message["type"] != "http.request":
        raise _incomplete()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise BodyTooLarge
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _incomplete()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _incomplete() -> Refused:
    # A body cut short (client gone, or a framing error the server closed on) is never
    # forwarded; the answer goes nowhere, the point is that no worker sees the request.
    return Refused(400, "incomplete-body", "Incomplete request body", "the body was cut short")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
