"""The handshake side of `/ws/<route>`: which routes take sockets (compiled once per
route table), the `Origin` check, and refusals as HTTP problem responses."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from contracts import problems
from ingress.request import Refused
from ingress.responses import Send
from ingress.routes import CompiledRoute, RouteTable

PREFIX = "/ws/"


@dataclass(slots=True, frozen=True)
class SocketRoute:
    compiled: CompiledRoute
    name: str
    topic: str
    origins: frozenset[str] | None  # None: the gateway's own host only
    any_origin: bool
    max_bytes: int
    rate: float  # messages per second; 0: no limit
    burst: int

    def origin_allowed(self, origin: str, host: str) -> bool:
        """Browsers send `Origin`; it must be listed, or (no list) be this very host."""
        origin = origin.lower().rstrip("/")
        if self.any_origin:
            return True
        if self.origins is None:
            return origin.partition("://")[2] == host.lower()
        return origin in self.origins


def socket_routes(table: RouteTable) -> dict[str, SocketRoute]:
    """The routes of `table` with `websocket:`, by name."""
    found: dict[str, SocketRoute] = {}
    for compiled in table.routes:
        options = compiled.route.websocket
        if options is None:
            continue
        listed = options.origins
        if listed is None and compiled.route.cors is not None:
            listed = compiled.route.cors.origins
        rate = options.rate
        found[compiled.name] = SocketRoute(
            compiled=compiled,
            name=compiled.name,
            topic=compiled.topic,
            origins=frozenset(listed) - {"*"} if listed is not None else None,
            any_origin=listed is not None and "*" in listed,
            max_bytes=options.max_message_bytes,
            rate=rate.messages_per_s if rate is not None else 0.0,
            burst=rate.burst if rate is not None else 0,
        )
    return found


def no_socket_route(path: str) -> Refused:
    return Refused(
        404,
        "no-route",
        "No WebSocket route",
        f"no route with websocket: serves {path}; connect to {PREFIX}<route name>",
    )


def bad_origin(origin: str, route: str) -> Refused:
    return Refused(
        403,
        "origin-refused",
        "WebSocket origin refused",
        f"origin {origin} may not open sockets on route {route}",
    )


async def deny(scope: MutableMapping[str, Any], send: Send, refusal: Refused, cid: bytes) -> None:
    """Answer the handshake with the problem as an HTTP response where the server
    supports it (ASGI `websocket.http.response`), else refuse it (the server sends 403)."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = problems.problem(
        refusal.status,
        refusal.slug,
        refusal.title,
        refusal.detail,
        instance=scope.get("path"),
        correlation_id=cid.decode(),
    )
    headers = [
        (b"content-type", problems.CONTENT_TYPE.encode()),
        (b"x-correlation-id", cid),
        *refusal.headers,
    ]
    await send(
        {"type": "websocket.http.response.start", "status": refusal.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": body})
