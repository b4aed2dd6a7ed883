"""Header rewriting of a forwarding proxy: hop-by-hop headers out, X-Forwarded-* and
RFC 7239 `Forwarded` in, upstream response headers cleaned for the ingress to frame.

Names arrive lower-case (the envelope's rule) and leave lower-case; values are the
latin-1 strings the ingress decoded, so repeats, order and bytes survive the trip.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from contracts.envelope import HttpInfo

# RFC 9110 section 7.6.1, plus the pre-standard ones proxies still meet in the wild.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# The HTTP client sets Host from the upstream URL and Content-Length from the body.
# Expect is dropped because the ingress already read the whole body: an upstream's
# "100 Continue" would only add a round trip. The forwarding headers are rebuilt.
_REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "content-length",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
}
# Hop-by-hop framing (Transfer-Encoding) goes. Content-Length stays: the ingress frames
# the body itself and uses it only for a HEAD reply, whose body is empty.
_RESPONSE_DROP = HOP_BY_HOP

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def forward_request_headers(http: HttpInfo) -> list[tuple[str, str]]:
    """The headers to send upstream for a request the ingress received as `http`."""
    out: list[tuple[str, str]] = []
    forwarded_for: list[str] = []
    forwarded: list[str] = []
    nominated: set[str] = set()
    for name, value in http.headers:
        if name in _REQUEST_DROP:
            if name == "connection":
                nominated.update(_tokens(value))
            elif name == "x-forwarded-for":
                forwarded_for.append(value)
            elif name == "forwarded":
                forwarded.append(value)
            continue
        out.append((name, value if value.isascii() else _wire_value(value)))
    if nominated:
        out = [(name, value) for name, value in out if name not in nominated]

    address = client_ip(http.client)
    if address:
        forwarded_for.append(address)
        out.append(("x-forwarded-for", ", ".join(forwarded_for)))
    out.append(("x-forwarded-proto", http.scheme))
    element = f"for={_forwarded_node(address)};proto={http.scheme}"
    if http.host:
        out.append(("x-forwarded-host", http.host))
        element += f";host={_quoted(http.host)}"
    forwarded.append(element)
    out.append(("forwarded", ", ".join(forwarded)))
    return out


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """An upstream response's raw headers, as envelope headers for the ingress."""
    decoded = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw]
    nominated: set[str] = set()
    for name, value in decoded:
        if name == "connection":
            nominated.update(_tokens(value))
    drop = _RESPONSE_DROP | nominated if nominated else _RESPONSE_DROP
    return [(name, value) for name, value in decoded if name not in drop]


def _tokens(value: str) -> Iterable[str]:
    return (token.strip().lower() for token in value.split(",") if token.strip())


def client_ip(client: str) -> str:
    """`1.2.3.4:5678` -> `1.2.3.4`; `::1:5678` or `[::1]:5678` -> `::1`."""
    if not client:
        return ""
    host = client.rsplit(":", 1)[0] if ":" in client else client
    return host.removeprefix("[").removesuffix("]")


def _forwarded_node(ip: str) -> str:
    # RFC 7239 section 6: IPv6 in brackets, and quoted since ':' is not a token char.
    if not ip:
        return "unknown"
    return f'"[{ip}]"' if ":" in ip else ip


def _quoted(value: str) -> str:
    if _TOKEN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wire_value(value: str) -> str:
    """aiohttp writes header values as UTF-8, the ingress decoded them as latin-1: give
    aiohttp the string whose UTF-8 is the original bytes, when those were UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value
