"""Event intake on the lane (ingress/event_lane.py), on raw sockets against the real data
plane: what the connection does around a claimed request (pipelining in order with
ASGI requests, bodies in pieces and chunked, limits before and while reading, clients
that leave, HTTP/1.0 and Connection: close, Expect: 100-continue) is what it does for
any other request. The events' own rules are tests/ingress/test_events.py's, over
both paths."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterable

import httpx
import orjson
import pytest

from contracts.codec import EnvelopeCodec
from contracts.telemetry.metrics import HTTP_REQUESTS
from tests.support.live_ingress import LiveIngress, exchange, live_ingress, statuses

EVENTS = {
    "types": {"ping": {"json_schema": {"type": "object", "required": ["n"]}}},
    "max_body_bytes": 1024,
}
HEADERS = (
    b"Host: gw\r\nce-id: {id}\r\nce-source: /lane\r\nce-type: ping\r\nce-specversion: 1.0\r\n"
    b"Content-Type: application/json\r\n"
)


def event(event_id: str, body: bytes = b'{"n":1}', *, extra: bytes = b"") -> bytes:
    head = b"POST /events/ping HTTP/1.1\r\n" + HEADERS.replace(b"{id}", event_id.encode())
    return head + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def ids(live: LiveIngress) -> list[str]:
    codec = EnvelopeCodec()
    return [codec.decode(data).id for data in live.stored_events]


@pytest.fixture
async def live() -> AsyncIterator[LiveIngress]:
    async with live_ingress(events=EVENTS) as live:
        yield live


async def _exchange(live: LiveIngress, raw: bytes, timeout: float = 3.0) -> bytes:
    return await asyncio.to_thread(exchange, live.port, raw, timeout=timeout)


async def test_pipelined_events_and_asgi_requests_are_answered_in_order(
    live: LiveIngress,
) -> None:
    raw = (
        event("p-1")
        + b"GET /echo/between HTTP/1.1\r\nHost: gw\r\n\r\n"
        + event("p-2", b'{"x":1}')  # 422: no n
        + event("p-3")
        + b"GET /echo/last HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    )
    answer = await _exchange(live, raw)
    assert statuses(answer) == [202, 200, 422, 202, 200]
    assert live.app.lane.served == 3
    assert ids(live) == ["p-1", "p-3"]
    assert live.paths == ["/echo/between", "/echo/last"]


async def test_a_body_in_pieces_and_a_chunked_body(live: LiveIngress) -> None:
    loop = asyncio.get_running_loop()

    def slowly() -> bytes:
        with socket.create_connection(("127.0.0.1", live.port), timeout=3) as sock:
            whole = event("s-1", b'{"n":  12345}')
            cut = whole.index(b"\r\n\r\n") + 6
            for piece in (whole[:20], whole[20:cut], whole[cut:]):
                sock.sendall(piece)
                time.sleep(0.05)
            chunked = (
                b"POST /events/ping HTTP/1.1\r\n"
                + HEADERS.replace(b"{id}", b"s-2")
                + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            sock.sendall(chunked + b'3\r\n{"n\r\n')
            time.sleep(0.05)
            sock.sendall(b'4\r\n":2}\r\n0\r\n\r\n')
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received

    answer = await loop.run_in_executor(None, slowly)
    assert statuses(answer) == [202, 202]
    assert live.app.lane.served == 2
    assert ids(live) == ["s-1", "s-2"]


async def test_a_body_above_the_limit_is_413_declared_or_chunked(live: LiveIngress) -> None:
    declared = (
        b"POST /events/ping HTTP/1.1\r\n"
        + HEADERS.replace(b"{id}", b"big-1")
        + b"Content-Length: 5000\r\n\r\n"
    )
    answer = await _exchange(live, declared, timeout=1.0)  # the body never comes
    assert statuses(answer) == [413]
    assert b"event intake accepts at most 1024 bytes" in answer
    chunk = b'{"n":1,"pad":"' + b"x" * 2000 + b'"}'
    chunked = (
        b"POST /events/ping HTTP/1.1\r\n"
        + HEADERS.replace(b"{id}", b"big-2")
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    )
    assert statuses(await _exchange(live, chunked)) == [413]
    assert ids(live) == []
    assert live.app.stats.too_large == 2


async def test_a_client_that_leaves_mid_body_stores_nothing(live: LiveIngress) -> None:
    whole = event("gone-1", b'{"n":1}' + b" " * 200)
    with socket.create_connection(("127.0.0.1", live.port), timeout=3) as sock:
        sock.sendall(whole[:-100])
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    assert ids(live) == []
    assert statuses(await _exchange(live, event("after-1", extra=b"Connection: close\r\n"))) == [
        202
    ]
    assert ids(live) == ["after-1"]


async def test_http_1_0_and_connection_close_get_a_closed_connection(live: LiveIngress) -> None:
    old = event("old-1").replace(b"HTTP/1.1", b"HTTP/1.0")
    answer = await _exchange(live, old + event("never"))
    assert statuses(answer) == [202]
    assert b"connection: close\r\n" in answer.lower()
    closing = await _exchange(live, event("close-1", extra=b"Connection: close\r\n"))
    assert statuses(closing) == [202]
    assert b"connection: close\r\n" in closing.lower()
    assert ids(live) == ["old-1", "close-1"]


async def test_the_response_is_whole_and_carries_the_servers_headers(live: LiveIngress) -> None:
    answer = await _exchange(live, event("h-1", extra=b"X-Correlation-ID: lane-cid-1\r\n"))
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 202 accepted"
    assert b"x-correlation-id: lane-cid-1" in lines
    assert b"content-type: application/json" in lines
    assert b"content-length: %d" % len(body) in lines
    assert any(line.startswith(b"date: ") for line in lines)
    assert body == b'{"status":"accepted"}'


async def test_expect_100_continue_takes_the_asgi_path(live: LiveIngress) -> None:
    def with_expect() -> bytes:
        with socket.create_connection(("127.0.0.1", live.port), timeout=3) as sock:
            whole = event("c-1", extra=b"Expect: 100-continue\r\nConnection: close\r\n")
            head, _, body = whole.partition(b"\r\n\r\n")
            sock.sendall(head + b"\r\n\r\n")
            interim = sock.recv(65536)
            sock.sendall(body)
            received = interim
            while chunk := sock.recv(65536):
                received += chunk
            return received

    served = live.app.lane.served
    answer = await asyncio.get_running_loop().run_in_executor(None, with_expect)
    assert statuses(answer) == [100, 202]
    assert ids(live) == ["c-1"]
    assert live.app.lane.served == served


async def test_lane_requests_are_counted_and_measured(live: LiveIngress) -> None:
    accepted, invalid = HTTP_REQUESTS.labels("events", "202"), HTTP_REQUESTS.labels("events", "422")
    before = (live.app.stats.requests, accepted.value, invalid.value)
    both = event("m-1") + event("m-2", b"[1]", extra=b"Connection: close\r\n")
    assert statuses(await _exchange(live, both)) == [202, 422]
    assert (live.app.stats.requests, accepted.value, invalid.value) == (
        before[0] + 2,
        before[1] + 1,
        before[2] + 1,
    )


async def test_the_lane_answers_as_the_asgi_path_does() -> None:
    """The same requests through the lane (a raw socket to the listener) and through the
    ASGI app: the same statuses, header fields and problem bodies, security headers and
    a policy's headers included."""
    events = {
        **EVENTS,
        "policies": [{"type": "rate_limit", "limits": [{"requests": 1000, "window_s": 60}]}],
    }
    security = {"headers": {"Permissions-Policy": "camera=()"}}
    close = b"Connection: close\r\n"
    requests = {
        "accepted": event("same-1", extra=close),
        "invalid": event("same-2", b"[1]", extra=close),
        "malformed": event("same-3", extra=close).replace(b"specversion: 1.0", b"specversion: 0.3"),
        "unknown type": event("same-4", extra=close).replace(b"/events/ping", b"/events/nope"),
        "too large": event("same-5", b'{"n":1,"pad":"' + b"x" * 2000 + b'"}', extra=close),
    }
    seen: dict[str, tuple[int, set[str], bytes]] = {}
    async with live_ingress(events=events, security_headers=security) as live:
        transport = httpx.ASGITransport(app=live.app, client=("127.0.0.1", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for name, raw in requests.items():
                lane = _parse(await _exchange(live, raw))
                head, _, body = raw.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split()[1]
                headers = dict(line.split(": ", 1) for line in lines[1:])
                del headers["Connection"]
                asgi = await client.post(path, content=body, headers=headers)
                assert lane[0] == asgi.status_code, name
                assert lane[1] == _names(asgi.headers.keys()), name
                if asgi.headers["content-type"] == "application/problem+json":
                    expected = asgi.json()
                    got = orjson.loads(lane[2])
                    expected.pop("correlation_id", None)  # each request has its own
                    got.pop("correlation_id", None)
                    assert got == expected, name
                seen[name] = lane
        assert live.app.lane.served == len(requests)
        assert [status for status, _, _ in seen.values()] == [202, 422, 400, 404, 413]
        assert {"permissions-policy", "ratelimit-policy", "x-correlation-id"} <= seen["accepted"][1]
        assert "permissions-policy" in seen["unknown type"][1]


def _names(names: Iterable[str]) -> set[str]:
    # The server's own (date, and connection on the last response) are not the app's.
    return {n.lower() for n in names} - {"date", "connection"}


def _parse(response: bytes) -> tuple[int, set[str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), _names(line.split(":", 1)[0] for line in lines[1:]), body
