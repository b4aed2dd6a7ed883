"""The plain-HTTP listener next to an HTTPS data plane: every request is answered with
308 to the same host, path and query over https (308 keeps the method and body)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from contracts import problems
from contracts.envelope import new_id

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# A DNS name or IPv4 address, or a bracketed IPv6 literal, with an optional port: the
# Host goes into Location, so nothing else may.
_HOST = re.compile(rb"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


class HttpsRedirect:
    """ASGI app answering 308 with `Location: https://<host>[:port]<target>`."""

    def __init__(self, https_port: int) -> None:
        self.port_suffix = b"" if https_port == 443 else b":%d" % https_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        host = next((v for n, v in scope["headers"] if n == b"host"), b"")
        if not _HOST.match(host):
            cid = new_id()
            body = problems.problem(
                400,
                "bad-host",
                "Bad Host header",
                "cannot redirect without a valid Host",
                correlation_id=cid,
            )
            await _answer(
                send,
                400,
                body,
                [
                    (b"content-type", problems.CONTENT_TYPE.encode()),
                    (b"x-correlation-id", cid.encode()),
                ],
            )
            return
        hostname = host.rsplit(b":", 1)[0] if not host.endswith(b"]") else host
        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        location = b"https://" + hostname + self.port_suffix + target
        await _answer(send, 308, b"", [(b"location", location)])


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
