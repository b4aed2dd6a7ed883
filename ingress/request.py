"""What the ingress reads off an HTTP request before routing it, once, and the
exception a step raises to answer it with a problem instead."""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from contracts.bus.pending import PendingReplies
from contracts.envelope import new_id

# No dots: the id becomes one token of a NATS subject.
_CORRELATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


@dataclass(slots=True)
class Refused(Exception):
    """Raised by a step of the data plane: answer with this problem and stop."""

    status: int
    slug: str
    title: str
    detail: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class RequestHead:
    method: str
    path: str  # raw, still percent-encoded
    query: str
    scheme: str
    host: str  # as sent, with the port
    hostname: str  # lower-case, without the port
    headers: list[tuple[str, str]]
    correlation: str
    cid: bytes
    traceparent: str
    tracestate: str | None
    content_length: str | None
    client: tuple[str, int] | None
    route: str = ""  # the matched route's name, once routed (for logs and metrics)
    principal: str | None = None  # the authenticated subject, once known

    @property
    def client_ip(self) -> str:
        return self.client[0] if self.client else ""


def read_head(scope: MutableMapping[str, Any], pending: PendingReplies) -> RequestHead:
    """One pass over the headers. A client's correlation id is kept when it is safe to
    use and not already in flight; a valid `traceparent` is continued, else one starts."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
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
    if correlation is None or not _CORRELATION_ID.match(correlation) or correlation in pending:
        correlation = new_id()
    if traceparent is None or not _TRACEPARENT.match(traceparent):
        traceparent = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"
        tracestate = None
    raw_path = scope.get("raw_path")
    return RequestHead(
        method=scope["method"],
        path=raw_path.decode("latin-1") if raw_path else scope["path"],
        query=scope["query_string"].decode("latin-1"),
        scheme=scope.get("scheme", "http"),
        host=host or "",
        hostname=host.rsplit(":", 1)[0].lower() if host else "",
        headers=headers,
        correlation=correlation,
        cid=correlation.encode(),
        traceparent=traceparent,
        tracestate=tracestate,
        content_length=content_length,
        client=scope.get("client"),
    )
