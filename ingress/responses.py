"""Sending responses from the raw ASGI app: replies and problem details."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from contracts import problems

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# Framing and hop-by-hop headers: the ingress frames the body itself.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "x-correlation-id",
        "date",  # the server adds its own; two would be invalid
    }
)


async def send_reply(
    send: Send,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    correlation_id: bytes,
    *,
    head: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    raw: list[tuple[bytes, bytes]] = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in headers
        if name not in _NOT_FORWARDED
    ]
    raw.append((b"x-correlation-id", correlation_id))
    if extra:
        raw.extend(extra)
    bodiless = status in (204, 304) or 100 <= status < 200
    if not bodiless:
        length = str(len(body))
        if head and not body:
            # A HEAD reply says how long the GET body would be: keep the worker's figure.
            length = next((v for n, v in headers if n == "content-length" and v.isdigit()), length)
        raw.append((b"content-length", length.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head or bodiless else body})


async def send_problem(
    send: Send,
    status: int,
    slug: str,
    title: str,
    detail: str | None,
    correlation_id: bytes,
    *,
    instance: str | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = problems.problem(
        status, slug, title, detail, instance=instance, correlation_id=correlation_id.decode()
    )
    headers = [
        (b"content-type", problems.CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-correlation-id", correlation_id),
    ]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
