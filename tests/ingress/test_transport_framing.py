"""Request smuggling and request limits on raw sockets against the real data plane on a
real port. A request with ambiguous or malformed framing is answered with a problem and
the connection closed; neither it nor anything smuggled inside it reaches the worker."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.live_ingress import LiveIngress, exchange, live_ingress, statuses

POST = b"POST /echo/a HTTP/1.1\r\nHost: gw\r\n"
SMUGGLED = b"GET /echo/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n"

# name -> (raw request, statuses the gateway may answer with)
SMUGGLING: dict[str, tuple[bytes, set[int]]] = {
    "cl-and-te": (
        POST + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        {400},
    ),
    "te-and-cl": (
        POST + b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + SMUGGLED,
        {400},
    ),
    "duplicate-cl-equal": (POST + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nab", {400}),
    "duplicate-cl-conflicting": (
        POST + b"Content-Length: 0\r\nContent-Length: 38\r\n\r\n" + SMUGGLED,
        {400},
    ),
    "cl-list": (POST + b"Content-Length: 0, 38\r\n\r\n" + SMUGGLED, {400}),
    "cl-signed": (POST + b"Content-Length: +38\r\n\r\n" + SMUGGLED, {400}),
    "cl-space-before-colon": (POST + b"Content-Length : 38\r\n\r\n" + SMUGGLED, {400}),
    "te-space-before-colon": (
        POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        {400},
    ),
    "te-gzip-chunked": (
        POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        {501},
    ),
    "te-chunked-identity": (
        POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
        {400, 501},
    ),
    "te-identity": (POST + b"Transfer-Encoding: identity\r\n\r\n" + SMUGGLED, {400, 501}),
    "te-xchunked": (
        POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        {400, 501},
    ),
    "te-twice": (
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        {400, 501},
    ),
    "te-in-http-1.0": (
        b"POST /echo/a HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nab\r\n0\r\n\r\n",
        {400},
    ),
    "te-obs-fold": (
        POST + b"Transfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        {400, 501},
    ),
    "obs-fold": (b"GET /echo/a HTTP/1.1\r\nHost: gw\r\nX-A: one\r\n two\r\n\r\n", {400}),
    "bare-lf": (b"GET /echo/a HTTP/1.1\nHost: gw\n\n", {400}),
    "bare-lf-in-headers": (b"GET /echo/a HTTP/1.1\r\nHost: gw\nX-B: y\r\n\r\n", {400}),
    "bare-cr": (b"GET /echo/a HTTP/1.1\r\nHost: gw\rX-B: y\r\n\r\n", {400}),
    "nul-in-value": (b"GET /echo/a HTTP/1.1\r\nHost: gw\r\nX-B: a\x00b\r\n\r\n", {400}),
    "chunk-size-not-hex": (
        POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        {400},
    ),
    "chunk-size-negative": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n",
        {400},
    ),
    "chunk-size-0x": (POST + b"Transfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n", {400}),
    "chunk-size-overflow": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n1FFFFFFFFFFFFFFFF2\r\nab\r\n0\r\n\r\n",
        {400},
    ),
    "chunk-size-trailing-space": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n",
        {400},
    ),
    "chunk-lf-only": (POST + b"Transfer-Encoding: chunked\r\n\r\n2\nab\n0\n\n", {400}),
    "chunk-longer-than-size": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        {400},
    ),
    "no-host": (b"GET /echo/a HTTP/1.1\r\n\r\n", {400}),
    "two-hosts": (b"GET /echo/a HTTP/1.1\r\nHost: gw\r\nHost: other\r\n\r\n", {400}),
    "http-0.9": (b"GET /echo/a\r\n\r\n", {400, 505}),
    "http-2.0-text": (b"GET /echo/a HTTP/2.0\r\nHost: gw\r\n\r\n", {505}),
    "http-1.2": (b"GET /echo/a HTTP/1.2\r\nHost: gw\r\n\r\n", {400, 505}),
    "absolute-form-other-host": (
        b"GET http://elsewhere/echo/a HTTP/1.1\r\nHost: gw\r\n\r\n",
        {400},
    ),
    "authority-form": (b"CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n", {400}),
}


@pytest.fixture
async def gateway() -> AsyncIterator[LiveIngress]:
    async with live_ingress() as live:
        yield live


async def _sent(live: LiveIngress, raw: bytes, timeout: float = 5.0) -> bytes:
    return await asyncio.to_thread(exchange, live.port, raw, timeout=timeout)


async def _settled(live: LiveIngress) -> None:
    """A good request after the bad ones: once its reply is back, anything the bad ones
    had let through would have reached the worker too."""
    reply = await _sent(
        live, b"GET /echo/sentinel HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    assert statuses(reply) == [200]


def _problem(reply: bytes) -> dict[str, object]:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower()
    assert b"connection: close" in head.lower()
    problem: dict[str, object] = json.loads(body)
    return problem


@pytest.mark.parametrize("case", SMUGGLING)
async def test_ambiguous_framing_is_refused_and_never_reaches_the_worker(
    gateway: LiveIngress, case: str
) -> None:
    raw, allowed = SMUGGLING[case]
    reply = await _sent(gateway, raw)
    answered = statuses(reply)
    assert len(answered) == 1, f"one answer, none for a smuggled request: {reply!r}"
    assert answered[0] in allowed, reply
    assert _problem(reply)["status"] == answered[0]
    await _settled(gateway)
    assert gateway.paths == ["/echo/sentinel"]


async def test_absolute_form_naming_the_host_is_served(gateway: LiveIngress) -> None:
    reply = await _sent(
        gateway, b"GET http://gw/echo/abs HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    assert statuses(reply) == [200]
    assert gateway.paths == ["/echo/abs"]


async def test_a_pipelined_request_after_a_chunked_body_is_its_own_request(
    gateway: LiveIngress,
) -> None:
    """The control case: correct framing keeps requests apart and both are served."""
    raw = (
        POST
        + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        + b"GET /echo/second HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    reply = await _sent(gateway, raw)
    assert statuses(reply) == [200, 200]
    assert gateway.paths == ["/echo/a", "/echo/second"]
    assert gateway.seen[0].body == b"abc"


async def test_too_many_header_fields_are_refused_with_431(gateway: LiveIngress) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(100))
    reply = await _sent(gateway, b"GET /echo/a HTTP/1.1\r\nHost: gw\r\n" + fields + b"\r\n")
    assert statuses(reply) == [431]
    assert _problem(reply)["type"] == "https://relaygate.dev/problems/headers-too-large"
    # 99 fields and Host: within the default of 100.
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(99))
    reply = await _sent(
        gateway, b"GET /echo/b HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n" + fields[9:] + b"\r\n"
    )
    assert statuses(reply) == [200]
    assert gateway.paths == ["/echo/b"]


async def test_oversized_headers_are_refused_with_431(gateway: LiveIngress) -> None:
    big = b"X-Big: " + b"a" * (33 * 1024) + b"\r\n"
    reply = await _sent(gateway, b"GET /echo/a HTTP/1.1\r\nHost: gw\r\n" + big + b"\r\n")
    assert statuses(reply) == [431]
    assert gateway.seen == []


async def test_a_header_that_never_ends_is_cut_off_without_waiting_for_it(
    gateway: LiveIngress,
) -> None:
    """No CRLF ever comes: the parser would buffer it all; the head's byte bound stops it."""
    raw = b"GET /echo/a HTTP/1.1\r\nHost: gw\r\nX-Endless: " + b"a" * (400 * 1024)
    reply = await _sent(gateway, raw)
    assert statuses(reply) == [431]


async def test_a_long_request_target_is_refused_with_414(gateway: LiveIngress) -> None:
    target = b"/echo/" + b"a" * (8 * 1024)
    reply = await _sent(gateway, b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert statuses(reply) == [414]
    assert _problem(reply)["type"] == "https://relaygate.dev/problems/uri-too-long"
    assert gateway.seen == []


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_over_the_route_limit_is_refused_with_413(
    gateway: LiveIngress, framing: str
) -> None:
    body = b"x" * 1500  # the route takes 1024
    if framing == "chunked":
        framed = b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:700], body[700:])
        )
        framed += b"0\r\n\r\n"
    else:
        framed = b"Content-Length: %d\r\n\r\n" % len(body) + body
    reply = await _sent(gateway, POST + b"Connection: close\r\n" + framed)
    assert statuses(reply) == [413]
    await _settled(gateway)
    assert gateway.paths == ["/echo/sentinel"]


async def test_a_body_cut_short_by_the_client_never_reaches_the_worker(
    gateway: LiveIngress,
) -> None:
    """The client sends half the declared body and goes away: nothing is forwarded."""
    reply = await _sent(gateway, POST + b"Content-Length: 100\r\n\r\nhalf", timeout=0.3)
    assert reply == b""
    await _settled(gateway)
    assert gateway.paths == ["/echo/sentinel"]


def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[1]" + b"}" * (depth - 1)


@pytest.mark.parametrize(
    "content_type", [b"application/json", b"application/problem+json; charset=utf-8", None]
)
async def test_json_nested_deeper_than_the_limit_is_refused_with_400(
    content_type: bytes | None,
) -> None:
    async with live_ingress({"limits": {"max_json_depth": 8}}) as live:
        header = b"Content-Type: %s\r\n" % content_type if content_type else b""
        for depth, expected in ((8, 200), (9, 400)):
            body = _nested(depth)
            raw = (
                POST
                + header
                + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body
            )
            reply = await _sent(live, raw)
            assert statuses(reply) == [expected], (depth, reply)
        assert _problem(reply)["type"] == "https://relaygate.dev/problems/json-too-deep"
        assert [r.body for r in live.seen] == [_nested(8)]


async def test_a_deep_body_that_is_not_json_is_not_checked() -> None:
    async with live_ingress({"limits": {"max_json_depth": 8}}) as live:
        body = b"[" * 50
        raw = (
            POST
            + b"Content-Type: text/plain\r\nConnection: close\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        assert statuses(await _sent(live, raw)) == [200]


def _refused_then_more(port: int) -> tuple[bytes, bool]:
    """Send a request the edge refuses and read the refusal up to the server's FIN; then
    go on sending, as a client streaming a body would. Returns the refusal, and whether
    those later sends met a reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(b"GET /echo/a HTTP/1.1\r\nHost: gw\r\nHost: other\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        try:
            for _ in range(3):
                sock.sendall(b"x" * 1024)
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            return received, True
        return received, False


async def test_a_refusal_closes_in_stages_so_later_client_bytes_meet_no_reset(
    gateway: LiveIngress,
) -> None:
    # Closed at once, the connection answers a client's further bytes with a reset, and
    # a reset that arrives before the client read the refusal makes its stack drop it
    # (RFC 9112 section 9.6). The ingress half-closes, then reads and drops for a while.
    reply, reset = await asyncio.to_thread(_refused_then_more, gateway.port)
    assert statuses(reply) == [400]
    assert not reset
