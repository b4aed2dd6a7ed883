"""What the ingress reads off an HTTP request before routing it, once, and the
exception a step raises to answer it with a problem instead."""

from __future__ import annotations

import random
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from contracts.bus.pending import PendingReplies
from contracts.envelope import new_id
from ingress.forwarded import TrustedProxies

# No dots: the id becomes one token of a NATS subject.
_random_bits = random.getrandbits  # trace ids are not secrets; see contracts.envelope.new_id
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
    scheme: str  # as a trusted proxy saw it, else as uvicorn did
    host: str  # as sent, with the port
    hostname: str  # lower-case, without the port
    headers: list[tuple[str, str]]
    correlation: str
    cid: bytes
    traceparent: str
    tracestate: str | None
    content_length: str | None
    client: tuple[str, int] | None  # the direct peer
    client_ip: str  # the client: the peer, or who a trusted proxy says it serves
    tls_subject: str | None = None  # of the verified client certificate (mutual TLS)
    route: str = ""  # the matched route's name, once routed (for logs and metrics)
    principal: str | None = None  # the authenticated subject, once known


def read_head(
    scope: MutableMapping[str, Any],
    pending: PendingReplies,
    proxies: TrustedProxies | None = None,
) -> RequestHead:
    """One pass over the headers. A client's correlation id is kept when it is safe to
    use and not already in flight; a valid `traceparent` is continued, else one starts.
    With `proxies`, a trusted peer's Forwarded / X-Forwarded-* name the client."""
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
        traceparent = f"00-{_random_bits(128) or 1:032x}-{_random_bits(64) or 1:016x}-01"
        tracestate = None
    raw_path = scope.get("raw_path")
    client = scope.get("client")
    client_ip = client[0] if client else ""
    scheme = scope.get("scheme", "http")
    scheme_is_tls = scheme == "https"
    if proxies is not None and client_ip:
        client_ip, scheme = proxies.resolve(client_ip, scheme, headers)
    return RequestHead(
        method=scope["method"],
        path=raw_path.decode("latin-1") if raw_path else scope["path"],
        query=scope["query_string"].decode("latin-1"),
        scheme=scheme,
        host=host or "",
        hostname=host.rsplit(":", 1)[0].lower() if host else "",
        headers=headers,
        correlation=correlation,
        cid=correlation.encode(),
        traceparent=traceparent,
        tracestate=tracestate,
        content_length=content_length,
        client=client,
        client_ip=client_ip,
        tls_subject=client_subject(scope) if scheme_is_tls else None,
    )


def client_subject(scope: MutableMapping[str, Any]) -> str | None:
    """The subject of the verified client certificate of a request's connection, if any:
    from the ASGI TLS extension the transport fills (ingress/transport/tls.py)."""
    extensions = scope.get("extensions")
    tls = extensions.get("tls") if extensions else None
    subject = tls.get("client_cert_name") if tls else None
    return subject if isinstance(subject, str) else None
