"""The data plane: a plain ASGI app (no framework on the hot path, see DESIGN.md's
measured costs). Match a route, wrap the request in an envelope, request over the
bus, answer with the worker's reply matched by correlation id."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
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
from contracts.config import Config
from contracts.envelope import REQUEST, Envelope, HttpInfo, new_id, now_ms
from ingress.policies import PolicyState, RequestContext, TierResolver, Verdict
from ingress.responses import Send, send_problem, send_reply
from ingress.routes import CompiledRoute, RouteTable

log = logging.getLogger("relaygate.ingress")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

# No dots: the id becomes one token of a NATS subject.
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


class _BodyTooLarge(Exception):
    pass


@dataclass(slots=True)
class IngressStats:
    requests: int = 0
    replies: int = 0
    no_route: int = 0
    too_large: int = 0
    no_responders: int = 0
    timeouts: int = 0
    shed: int = 0
    bus_errors: int = 0
    rejected: int = 0  # by an edge policy


class IngressApp:
    """ASGI 3 application for HTTP routes. Build once per config; `reload` swaps
    the route table atomically (a request sees the old table or the new one)."""

    def __init__(self, config: Config, bus: Bus, codec: EnvelopeCodec | None = None) -> None:
        self.bus = bus
        self.codec = codec or EnvelopeCodec()
        self.stats = IngressStats()
        self.source = f"relaygate://ingress/{bus.node_id}"
        self.retry_after = str(config.ingress.retry_after_s).encode()
        self.policy_state = PolicyState(config)  # stores outlive reloads
        self.tiers = TierResolver(config)
        self.table = self._table(config)

    def _table(self, config: Config) -> RouteTable:
        return RouteTable(config, lambda specs: self.policy_state.build(config, specs))

    def reload(self, config: Config) -> None:
        self.tiers = TierResolver(config)
        self.table = self._table(config)
        self.retry_after = str(config.ingress.retry_after_s).encode()

    async def aclose(self) -> None:
        await self.policy_state.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        else:  # websocket: not served yet; refuse the handshake cleanly
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.stats
        stats.requests += 1
        headers: list[tuple[str, str]] = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
        ]
        host = correlation = traceparent = tracestate = content_length = None
        for name, value in headers:
            if name == "host":
                host = value
            elif name == "x-correlation-id":
                correlation = value
            elif name == "traceparent":
                traceparent = value
            elif name == "tracestate":
                tracestate = value
            elif name == "content-length":
                content_length = value
        pending = self.bus.pending
        if correlation is None or not _CORRELATION_ID.match(correlation) or correlation in pending:
            correlation = new_id()
        cid = correlation.encode()
        method: str = scope["method"]
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        hostname = (host or "").rsplit(":", 1)[0].lower() if host else ""

        matched = self.table.match(method, hostname, path, headers)
        if not isinstance(matched, tuple):
            stats.no_route += 1
            if matched:
                allow = ", ".join(sorted(matched)).encode()
                await send_problem(
                    send,
                    405,
                    "method-not-allowed",
                    "Method not allowed",
                    f"{method} is not allowed on {path}",
                    cid,
                    instance=path,
                    extra_headers=[(b"allow", allow)],
                )
            else:
                await send_problem(
                    send,
                    404,
                    "no-route",
                    "No route",
                    f"no route matches {method} {path}",
                    cid,
                    instance=path,
                )
            return
        route, params = matched
        client = scope.get("client")
        extra: list[tuple[bytes, bytes]] | None = None
        if route.policies:
            verdict = await self._policies(route, method, path, headers, client)
            if verdict.rejection is not None:
                stats.rejected += 1
                r = verdict.rejection
                await send_problem(
                    send,
                    r.status,
                    r.slug,
                    r.title,
                    r.detail,
                    cid,
                    instance=path,
                    extra_headers=r.headers,
                )
                return
            extra = verdict.headers

        limit = route.max_body_bytes
        if content_length is not None and content_length.isdigit() and int(content_length) > limit:
            await self._too_large(send, route, cid, path)
            return
        try:
            body = await _read_body(receive, limit)
        except _BodyTooLarge:
            await self._too_large(send, route, cid, path)
            return

        if traceparent is None or not _TRACEPARENT.match(traceparent):
            traceparent = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"
            tracestate = None
        now = now_ms()
        envelope = Envelope(
            id=new_id(),
            source=self.source,
            type=REQUEST,
            time=now,
            subject=route.name,
            data=body,
            correlationid=correlation,
            replyto=self.bus.reply_address(correlation),
            deadline=now + route.timeout_ms,
            traceparent=traceparent,
            tracestate=tracestate,
            http=HttpInfo(
                method=method,
                scheme=scope.get("scheme", "http"),
                host=host or "",
                path=path,
                query=scope["query_string"].decode("latin-1"),
                headers=headers,
                client=f"{client[0]}:{client[1]}" if client else "",
                params=params,
            ),
        )
        try:
            message = await self.bus.request(
                route.topic,
                self.codec.encode(envelope),
                correlation_id=correlation,
                timeout=route.timeout_s,
            )
            reply = self.codec.decode(message.data)
        except NoResponders:
            stats.no_responders += 1
            await send_problem(
                send,
                503,
                "no-worker",
                "No worker available",
                f"no worker listens on {route.topic}",
                cid,
                instance=path,
            )
            return
        except RequestTimeout:
            stats.timeouts += 1
            await send_problem(
                send,
                504,
                "deadline-exceeded",
                "Deadline exceeded",
                f"no reply from {route.topic} within {route.timeout_ms} ms",
                cid,
                instance=path,
            )
            return
        except Backpressure:
            stats.shed += 1
            await send_problem(
                send,
                503,
                "overloaded",
                "Too many requests in flight",
                "the gateway is at its pending-reply limit; retry shortly",
                cid,
                instance=path,
                extra_headers=[(b"retry-after", self.retry_after)],
            )
            return
        except PayloadTooLarge as exc:
            stats.too_large += 1
            await send_problem(
                send,
                413,
                "body-too-large",
                "Request body too large",
                f"the message is above the bus limit: {exc}",
                cid,
                instance=path,
            )
            return
        except (NotConnected, CodecError) as exc:
            stats.bus_errors += 1
            log.warning("bus failure on %s: %s", route.name, exc)
            await send_problem(
                send,
                503,
                "bus-unavailable",
                "Message bus unavailable",
                str(exc),
                cid,
                instance=path,
                extra_headers=[(b"retry-after", self.retry_after)],
            )
            return
        stats.replies += 1
        http = reply.http
        if http is None or not 100 <= http.status <= 599:
            await send_problem(
                send,
                502,
                "bad-reply",
                "Bad reply from worker",
                f"the worker on {route.topic} sent no HTTP status",
                cid,
                instance=path,
            )
            return
        await send_reply(
            send, http.status, http.headers, reply.data, cid, head=method == "HEAD", extra=extra
        )

    async def _policies(
        self,
        route: CompiledRoute,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        client: tuple[str, int] | None,
    ) -> Verdict:
        """Run the route's policies in order; the first rejection ends the run. The
        headers of every policy that ran go on the response either way."""
        client_ip = client[0] if client else ""
        context = RequestContext(
            route.name, method, path, headers, client_ip, self.tiers(None, headers, client_ip)
        )
        merged: list[tuple[bytes, bytes]] = []
        for policy in route.policies:
            verdict = await policy(context)
            if verdict.rejection is not None:
                return verdict
            merged.extend(verdict.headers)
        return Verdict(merged)

    async def _too_large(self, send: Send, route: CompiledRoute, cid: bytes, path: str) -> None:
        self.stats.too_large += 1
        await send_problem(
            send,
            413,
            "body-too-large",
            "Request body too large",
            f"route {route.name} accepts at most {route.max_body_bytes} bytes",
            cid,
            instance=path,
        )


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise _BodyTooLarge
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
