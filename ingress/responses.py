"""Sending responses from the raw ASGI app: replies and problem details."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from contracts import problems

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# Framing and hop-by-hop headers: the ingress frames the body itself.
NOT_FORWARDED = frozenset(
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


@dataclass(frozen=True, slots=True)
class UpstreamRules:
    """Headers the gateway adds to a worker's (or the cache's) reply, encoded once."""

    drop: frozenset[str]  # not forwarded: framing, and the headers `fixed` replaces
    fixed: tuple[tuple[bytes, bytes], ...]  # always added
    defaults: tuple[tuple[str, tuple[bytes, bytes]], ...]  # added unless the reply has one


async def send_reply(
    send: Send,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    correlation_id: bytes,
    *,
    head: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
    rules: UpstreamRules | None = None,
) -> None:
    drop = NOT_FORWARDED if rules is None else rules.drop
    raw: list[tuple[bytes, bytes]] = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in headers
        if name not in drop
    ]
    raw.append((b"x-correlation-id", correlation_id))
    if extra:
        raw.extend(extra)
    if rules is not None:
        raw.extend(rules.fixed)
        if rules.defaults:
            sent = {name for name, _ in headers}
            raw.extend(header for name, header in rules.defaults if name not in sent)
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
    headers, body = problem_parts(status, slug, title, detail, correlation_id, instance=instance)
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def problem_parts(
    status: int,
    slug: str,
    title: str,
    detail: str | None,
    correlation_id: bytes,
    *,
    instance: str | None = None,
    **members: Any,
) -> tuple[Headers, bytes]:
    """The headers (with the length) and body of a problem response; `members` are
    the problem type's own (`errors=[...]`)."""
    body = problems.problem(
        status,
        slug,
        title,
        detail,
        instance=instance,
        correlation_id=correlation_id.decode(),
        **members,
    )
    headers = [
        (b"content-type", problems.CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-correlation-id", correlation_id),
    ]
    return headers, body
