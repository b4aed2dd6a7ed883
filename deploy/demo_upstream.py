"""The small HTTP upstream `relaygate up` starts for its demo (and the benchmark's
direct backend): a raw ASGI app that describes the request it got.

    /status/{code}   answers with that status
    /slow?ms=N       waits N ms first
    anything else    200 with {method, path, query, headers, body_bytes}
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def demo_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path: str = scope["path"]
    query: str = scope["query_string"].decode("latin-1")
    status = 200
    # Find the route segment anywhere, so that a gateway prefix (/demo/upstream/…) works too.
    if "/status/" in path:
        code = path.rsplit("/status/", 1)[1].split("/", 1)[0]
        status = int(code) if code.isdigit() and 200 <= int(code) <= 599 else 400
    elif path.endswith("/slow"):
        for pair in query.split("&"):
            if pair.startswith("ms="):
                await asyncio.sleep(min(int(pair[3:] or 0), 60_000) / 1000)
    payload = orjson.dumps(
        {
            "upstream": "demo",
            "method": scope["method"],
            "path": (scope.get("raw_path") or path.encode()).decode("latin-1"),
            "query": query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_bytes": len(body),
        }
    )
    bodiless = status in (204, 304)
    headers = [(b"content-type", b"application/json")]
    if not bodiless:
        headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if bodiless else payload})


def serve_demo_upstream(host: str, port: int) -> None:
    uvicorn.run(
        demo_app,
        host=host,
        port=port,
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
