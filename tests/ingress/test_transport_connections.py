"""Slow clients and connection caps on raw sockets against the real data plane: a client
too slow with its headers or body is cut off, idle keep-alive connections are closed,
and connections past the per-address or total cap are refused at once with a 503."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from tests.support.live_ingress import live_ingress, statuses

GET = b"GET /echo/a HTTP/1.1\r\nHost: gw\r\n\r\n"


def _drip(port: int, raw: bytes, every_s: float, limit_s: float) -> tuple[bytes, float]:
    """Send `raw` one byte every `every_s` (a slowloris); return what the server wrote
    back and when it closed the connection, in seconds from the connect."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(every_s)
        for byte in raw:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if time.monotonic() - started > limit_s:
                    break
                continue
            received += chunk
            if not chunk:
                break
        return received, time.monotonic() - started


def _idle(port: int, first: bytes, limit_s: float) -> tuple[bytes, float]:
    """Send `first`, then nothing: what the server wrote and when it closed."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(limit_s)
        if first:
            sock.sendall(first)
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - started


async def test_a_client_dripping_its_headers_is_cut_off_after_the_header_timeout() -> None:
    async with live_ingress({"limits": {"header_timeout_s": 0.6}}) as live:
        raw = b"GET /echo/slow HTTP/1.1\r\nHost: gw\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
        reply, closed_after = await asyncio.to_thread(_drip, live.port, raw, 0.05, 5.0)
        assert statuses(reply) == [408]
        assert b"application/problem+json" in reply
        assert 0.4 <= closed_after < 2.0
        assert live.seen == []
        assert live.transport.guard.timeouts == 1


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() -> None:
    async with live_ingress({"limits": {"header_timeout_s": 0.5}}) as live:
        reply, closed_after = await asyncio.to_thread(_idle, live.port, b"", 5.0)
        assert statuses(reply) == [408]
        assert 0.3 <= closed_after < 2.0


async def test_a_client_stalling_in_its_body_is_cut_off_after_the_body_timeout() -> None:
    async with live_ingress({"limits": {"body_timeout_s": 0.5}}) as live:
        head = b"POST /echo/b HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nabc"
        _, closed_after = await asyncio.to_thread(_idle, live.port, head, 5.0)
        assert 0.3 <= closed_after < 2.0
        await asyncio.sleep(0.1)
        assert live.seen == []


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() -> None:
    async with live_ingress({"limits": {"keepalive_timeout_s": 1}}) as live:
        reply, closed_after = await asyncio.to_thread(_idle, live.port, GET, 5.0)
        assert statuses(reply) == [200]
        assert 0.8 <= closed_after < 2.5


def _open(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


def _served(sock: socket.socket) -> list[int]:
    """Send a request that closes the connection after its answer; the statuses seen."""
    sock.settimeout(5.0)
    received = b""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(b"GET /echo/c HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    sock.close()
    return statuses(received)


async def test_connections_past_the_per_address_cap_get_503_and_are_closed() -> None:
    async with live_ingress({"limits": {"max_connections_per_address": 3}}) as live:
        held = await asyncio.to_thread(_open, live.port, 3)
        extra = await asyncio.to_thread(_open, live.port, 1)
        assert await asyncio.to_thread(_served, extra[0]) == [503]
        assert live.transport.guard.per_address == {"127.0.0.1": 3}
        # The held ones are served; once one is gone a new connection is admitted.
        assert await asyncio.to_thread(_served, held.pop()) == [200]
        await asyncio.sleep(0.05)
        fresh = await asyncio.to_thread(_open, live.port, 1)
        assert await asyncio.to_thread(_served, fresh[0]) == [200]
        for sock in held:
            sock.close()
        assert live.transport.guard.refused == 1


async def test_connections_past_the_node_cap_get_503() -> None:
    limits = {"max_connections": 2, "max_connections_per_address": None}
    async with live_ingress({"limits": limits}) as live:
        held = await asyncio.to_thread(_open, live.port, 2)
        extra = await asyncio.to_thread(_open, live.port, 1)
        assert await asyncio.to_thread(_served, extra[0]) == [503]
        for sock in held:
            assert await asyncio.to_thread(_served, sock) == [200]
