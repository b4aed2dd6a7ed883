"""`WebSockets`: serves `/ws/<route>` sockets on one node and delivers what workers
push to them (see contracts/websocket.py for the wire format).

Handshake: the route must have `websocket:`; `Origin` (when a browser sends one) must
be allowed; the route's policy chain runs on the handshake headers exactly as for an
HTTP request, and its principal rides on every message of the connection. After that,
each message is checked against the route's size limit (close 1009) and rate (close
1008) and published to the route's topic, fire and forget."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from contracts import websocket as ws
from contracts.bus import BusError, Message, PayloadTooLarge, Subscription
from contracts.codec import CodecError
from contracts.envelope import Envelope, HttpInfo, Principal, first_header, new_id, now_ms
from ingress.request import Refused, RequestHead, read_head
from ingress.responses import Send
from ingress.routes import RouteTable
from ingress.ws.connections import Connection, Connections
from ingress.ws.handshake import (
    PREFIX,
    SocketRoute,
    bad_origin,
    deny,
    no_socket_route,
    socket_routes,
)
from ingress.ws.wire import Push, binary_push, text_push

if TYPE_CHECKING:
    from ingress.app import IngressApp

log = logging.getLogger("relaygate.ingress.ws")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

GOING_AWAY = 1001
POLICY_VIOLATION = 1008
TOO_BIG = 1009
TRY_AGAIN_LATER = 1013


@dataclass(slots=True)
class WebSocketStats:
    opened: int = 0
    refused: int = 0  # handshakes refused: no route, origin, a policy
    messages: int = 0  # client messages published
    too_large: int = 0  # closed with 1009
    rate_limited: int = 0  # closed with 1008
    bus_errors: int = 0  # closed with 1013: the message could not be published
    unknown_target: int = 0  # pushes for a connection this node does not hold (any more)


class WebSockets:
    def __init__(self, app: IngressApp) -> None:
        self.app = app
        self.bus = app.bus
        self.codec = app.codec
        self.connections = Connections()
        self.counters = WebSocketStats()
        self._table: RouteTable | None = None
        self._routes: dict[str, SocketRoute] = {}
        self._subscriptions: list[Subscription] = []
        self._lock = asyncio.Lock()

    def stats(self) -> dict[str, int]:
        connections = self.connections
        return {
            "open": len(connections),
            "channels": len(connections.channels),
            "members": sum(len(members) for members in connections.channels.values()),
            "pushed": connections.pushed,
            "dropped": connections.dropped,
            **asdict(self.counters),
        }

    def routes(self) -> dict[str, SocketRoute]:
        """Socket routes of the current table, compiled once per table (reloads swap it)."""
        table = self.app.table
        if table is not self._table:
            self._routes = socket_routes(table)
            self._table = table
        return self._routes

    async def serve(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """One socket, from its handshake to its end."""
        if (await receive())["type"] != "websocket.connect":
            return
        head = read_head({**scope, "method": "GET"}, self.bus.pending, self.app.proxies)
        try:
            route, headers, principal = await self._handshake(head)
            await self._start()
        except Refused as refusal:
            self.counters.refused += 1
            await deny(scope, send, refusal, head.cid)
            return
        await send(
            {"type": "websocket.accept", "headers": [(b"x-correlation-id", head.cid), *headers]}
        )
        connection = Connection(ws.connection_id(self.bus.node_id), route.name, send)
        self.connections.add(connection)
        self.counters.opened += 1
        base = Envelope(
            id="",
            source=self.app.source,
            type=ws.MESSAGE,
            time=0,
            subject=route.name,
            correlationid=connection.id,
            replyto=self.bus.topics.ws_node(self.bus.node_id),
            traceparent=head.traceparent,
            tracestate=head.tracestate,
            principal=principal,
        )
        code = 1006
        try:
            await self._publish(route, _event(base, ws.OPEN, http=self.app.http_info(head, {})))
            del head  # sockets live long: keep nothing of the handshake (~1.6 KiB each)
            code = await self._messages(route, connection, base, receive)
        except BusError as exc:
            self.counters.bus_errors += 1
            log.warning("socket %s on %s: %s", connection.id, route.name, exc)
            code = await self._close(connection, TRY_AGAIN_LATER, "message bus unavailable")
        finally:
            self.connections.remove(connection)
            try:
                await self._publish(route, _event(base, ws.CLOSE, http=HttpInfo(status=code)))
            except BusError as exc:
                log.warning(
                    "socket %s on %s: close not published: %s", connection.id, route.name, exc
                )

    async def _handshake(
        self, head: RequestHead
    ) -> tuple[SocketRoute, list[tuple[bytes, bytes]], Principal | None]:
        name = head.path[len(PREFIX) :] if head.path.startswith(PREFIX) else ""
        route = self.routes().get(name)
        if route is None:
            raise no_socket_route(head.path)
        origin = first_header(head.headers, "origin")
        if origin is not None and not route.origin_allowed(origin, head.host):
            raise bad_origin(origin, route.name)
        if not route.compiled.policies:
            return route, [], None
        headers, principal = await self.app.run_policies(route.compiled, head)
        return route, headers, principal

    async def _messages(
        self, route: SocketRoute, connection: Connection, base: Envelope, receive: Receive
    ) -> int:
        """Publish the client's messages until it leaves or breaks a limit; the close code."""
        limit = route.max_bytes
        rate = route.rate
        burst = float(route.burst)
        tokens = burst
        clock = asyncio.get_running_loop().time
        last = clock()
        counters = self.counters
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                code: int = message.get("code", 1005)
                return code
            text = message.get("text")
            if text is not None:
                data = text.encode()
                content = ws.TEXT
            else:
                data = message.get("bytes") or b""
                content = ws.BINARY
            if len(data) > limit:
                counters.too_large += 1
                return await self._close(connection, TOO_BIG, f"message above {limit} bytes")
            if rate:
                now = clock()
                tokens = min(burst, tokens + (now - last) * rate)
                last = now
                if tokens < 1:
                    counters.rate_limited += 1
                    return await self._close(
                        connection, POLICY_VIOLATION, f"over {rate:g} messages/s"
                    )
                tokens -= 1
            envelope = _event(base, ws.MESSAGE, data=data, content=content)
            try:
                await self._publish(route, envelope)
            except PayloadTooLarge:
                counters.too_large += 1
                return await self._close(connection, TOO_BIG, "message above the bus limit")
            counters.messages += 1

    async def _publish(self, route: SocketRoute, envelope: Envelope) -> None:
        await self.bus.publish(route.topic, self.codec.encode(envelope))

    async def _close(self, connection: Connection, code: int, reason: str) -> int:
        connection.closing = True
        with contextlib.suppress(OSError, RuntimeError):  # it closed first
            await connection.send({"type": "websocket.close", "code": code, "reason": reason})
        return code

    async def _start(self) -> None:
        """Subscribe to this node's pushes and to channel pushes, once, before the first
        socket is accepted (its `ws.open` is published after the subscriptions)."""
        if self._subscriptions:
            return
        async with self._lock:
            if self._subscriptions:
                return
            topics = self.bus.topics
            try:
                node = await self.bus.subscribe(topics.ws_node(self.bus.node_id), self._on_node)
                channels = await self.bus.subscribe(topics.ws_channels(), self._on_channel)
            except BusError as exc:
                raise Refused(503, "bus-unavailable", "Message bus unavailable", str(exc)) from None
            self._subscriptions = [node, channels]

    async def _on_node(self, message: Message) -> None:
        envelope = self._decode(message)
        if envelope is None:
            return
        connection = self.connections.by_id.get(envelope.correlationid)
        if connection is None:
            self.counters.unknown_target += 1
            return
        kind = envelope.type
        if kind == ws.PUSH:
            self.connections.deliver(connection, _push(envelope))
        elif kind == ws.JOIN and envelope.subject:
            self.connections.join(connection, envelope.subject)
        elif kind == ws.LEAVE and envelope.subject:
            self.connections.leave(connection, envelope.subject)
        elif kind == ws.DISCONNECT:
            code = envelope.http.status if envelope.http is not None else 1000
            await self._close(connection, code or 1000, envelope.data.decode(errors="replace"))

    async def _on_channel(self, message: Message) -> None:
        envelope = self._decode(message)
        if envelope is not None and envelope.type == ws.PUSH and envelope.subject:
            self.connections.broadcast(envelope.subject, _push(envelope))

    def _decode(self, message: Message) -> Envelope | None:
        try:
            return self.codec.decode(message.data)
        except CodecError as exc:
            log.warning("dropping an undecodable push on %s: %s", message.topic, exc)
            return None

    async def shutdown(self, timeout: float = 2.0) -> None:
        """Close every socket with 1001 (going away) before the server stops."""
        await self.connections.close_all(GOING_AWAY, "server shutting down", timeout)

    async def aclose(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            await subscription.stop()


def _event(
    base: Envelope,
    kind: str,
    *,
    data: bytes = b"",
    content: str | None = None,
    http: HttpInfo | None = None,
) -> Envelope:
    return Envelope(
        id=new_id(),
        source=base.source,
        type=kind,
        time=now_ms(),
        subject=base.subject,
        datacontenttype=content,
        data=data,
        correlationid=base.correlationid,
        replyto=base.replyto,
        traceparent=base.traceparent,
        tracestate=base.tracestate,
        principal=base.principal,
        http=http,
    )


def _push(envelope: Envelope) -> Push:
    data = envelope.data
    if envelope.datacontenttype != ws.BINARY:
        try:
            return text_push(data.decode(), data)
        except UnicodeDecodeError:
            pass  # not text after all: send the bytes as they are
    return binary_push(data)
