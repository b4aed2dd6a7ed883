"""The routing worker against real upstream HTTP servers on free ports: an aiohttp.web
app that records what it received, and raw sockets where exact bytes matter."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from pydantic import ValidationError

from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.codec import EnvelopeCodec
from contracts.config import Config, HttpUpstream, Route, UpstreamTarget, When
from contracts.envelope import REPLY, REQUEST, Envelope, HttpInfo, new_id, now_ms
from contracts.topics import Topics
from workers.routing import GROUP, HttpProxy, UpstreamPool, build_routing
from workers.routing.session import open_session
from workers.sdk import Request, Response

MiB = 1024 * 1024
CLIENT = "203.0.113.7:50123"


# ----------------------------------------------------------------- upstream servers


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    peer: object  # the client socket's address: the same one means a reused connection

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


@dataclass
class Upstream:
    url: str
    seen: list[Seen] = field(default_factory=list)

    @property
    def last(self) -> Seen:
        assert self.seen, "the upstream received no request"
        return self.seen[-1]


async def _recorder(upstream: Upstream, request: web.Request) -> web.StreamResponse:
    body = await request.read()
    upstream.seen.append(
        Seen(
            request.method,
            request.raw_path,
            [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in request.raw_headers],
            body,
            request.transport.get_extra_info("peername") if request.transport else None,
        )
    )
    path = request.path
    if path.startswith("/status/"):
        status = int(path.removeprefix("/status/"))
        if status == 301:
            return web.Response(status=301, headers={"Location": "/moved-here"})
        if status == 204:
            return web.Response(status=204, headers={"X-Done": "yes"})
        return web.Response(status=status, text=f"status {status}")
    if path == "/slow":
        await asyncio.sleep(float(request.query["s"]))
        return web.Response(text="late")
    if path == "/big":
        size = int(request.query["n"])
        if request.query.get("chunked"):
            stream = web.StreamResponse()
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            for _ in range(size // 4096):
                await stream.write(b"x" * 4096)
            await stream.write_eof()
            return stream
        return web.Response(body=b"x" * size)
    content_type = request.headers.get("Content-Type", "application/octet-stream")
    return web.Response(
        body=body,
        headers={"Content-Type": content_type, "X-Method": request.method},
    )


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """An HTTP server that records each request and echoes its body back."""
    app = web.Application(client_max_size=8 * MiB)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
    server = Upstream("")

    async def handle(request: web.Request) -> web.StreamResponse:
        return await _recorder(server, request)

    app.router.add_route("*", "/{tail:.*}", handle)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


RawReply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[RawReply], Awaitable[str]]]:
    """`await raw_upstream(reply)` -> the URL of a socket server that runs `reply`."""
    servers: list[asyncio.Server] = []

    async def start(reply: RawReply) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reply(reader, writer)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def raw_response(data: bytes) -> RawReply:
    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    return reply


# ----------------------------------------------------------------- proxies and requests


ProxyFactory = Callable[..., HttpProxy]


@pytest.fixture
async def make_proxy() -> AsyncIterator[ProxyFactory]:
    """`make_proxy(url, path=None, when="/{rest:path}", **upstream options)`."""
    pools: list[UpstreamPool] = []

    def build(
        url: str, *, path: str | None = None, when: str = "/{rest:path}", **options: int
    ) -> HttpProxy:
        upstream = HttpUpstream(url=url, **options)
        route = Route(
            name="orders",
            when=When(path=when),
            to=UpstreamTarget(type="upstream", upstream="orders", path=path),
        )
        pool = UpstreamPool("orders", upstream, open_session(upstream))
        pools.append(pool)
        return HttpProxy(route, pool)

    yield build
    for pool in pools:
        await pool.close()


def make_envelope(
    method: str = "GET",
    path: str = "/",
    *,
    query: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    timeout_ms: int = 5_000,
    client: str = CLIENT,
    host: str = "api.example.com",
) -> Envelope:
    now = now_ms()
    return Envelope(
        id=new_id(),
        source="relaygate://ingress/test",
        type=REQUEST,
        time=now,
        subject="orders",
        data=body,
        correlationid=new_id(),
        deadline=now + timeout_ms,
        http=HttpInfo(
            method=method,
            scheme="https",
            host=host,
            path=path,
            query=query,
            headers=[("host", host), *(headers or [])],
            client=client,
            params=params or {},
        ),
    )


def make_request(method: str = "GET", path: str = "/", **kwargs: Any) -> Request:
    return Request(make_envelope(method, path, **kwargs))


def problem_slug(response: Response) -> str:
    assert ("content-type", "application/problem+json") in response.headers
    slug: str = orjson.loads(response.body)["type"].rsplit("/", 1)[1]
    return slug


# ----------------------------------------------------------------- methods, paths, bodies


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
async def test_each_method_reaches_the_upstream_with_its_body(
    upstream: Upstream, make_proxy: ProxyFactory, method: str
) -> None:
    proxy = make_proxy(upstream.url)
    body = b"" if method in ("GET", "DELETE") else b'{"n":1}'
    response = await proxy(
        make_request(method, "/orders/7", body=body, headers=[("content-type", "application/json")])
    )
    assert response.status == 200
    assert (upstream.last.method, upstream.last.target, upstream.last.body) == (
        method,
        "/orders/7",
        body,
    )
    assert ("x-method", method) in response.headers
    assert response.body == body


async def test_head_answers_headers_without_a_body(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    response = await make_proxy(upstream.url)(make_request("HEAD", "/orders/7"))
    assert response.status == 200
    assert upstream.last.method == "HEAD"
    assert response.body == b""
    assert ("x-method", "HEAD") in response.headers


async def test_encoded_path_and_raw_query_reach_the_upstream_unchanged(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    proxy = make_proxy(upstream.url)
    await proxy(make_request("GET", "/a%2Fb%20c/%7Euser/../x", query="q=a%20b&q=%2B&flag"))
    assert upstream.last.target == "/a%2Fb%20c/%7Euser/../x?q=a%20b&q=%2B&flag"


async def test_base_path_of_the_upstream_prefixes_the_request_path(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    await make_proxy(upstream.url + "/api/v1")(make_request("GET", "/orders", query="x=1"))
    assert upstream.last.target == "/api/v1/orders?x=1"


async def test_path_template_is_filled_from_the_raw_parameters(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    proxy = make_proxy(
        upstream.url, when="/users/{id}/files/{rest:path}", path="/v2/accounts/{id}/blobs/{rest}"
    )
    request = make_request(
        "GET",
        "/users/a%20b/files/x/y%2Fz.txt",
        query="dl=1",
        params={"id": "a%20b", "rest": "x/y%2Fz.txt"},
    )
    await proxy(request)
    assert upstream.last.target == "/v2/accounts/a%20b/blobs/x/y%2Fz.txt?dl=1"


def test_path_template_without_leading_slash_is_refused_by_the_config() -> None:
    # Glued to the base URL, "{rest}" would change the authority: "http://h" + "x/…".
    with pytest.raises(ValidationError, match="should match pattern '\\^/'"):
        UpstreamTarget(type="upstream", upstream="u", path="{rest}")


async def test_one_mebibyte_binary_body_goes_both_ways_intact(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    payload = os.urandom(MiB)
    response = await make_proxy(upstream.url)(
        make_request(
            "POST", "/blob", body=payload, headers=[("content-type", "application/octet-stream")]
        )
    )
    assert hashlib.sha256(upstream.last.body).digest() == hashlib.sha256(payload).digest()
    assert upstream.last.values("content-length") == [str(MiB)]
    assert response.status == 200
    assert response.body == payload


async def test_requests_reuse_a_pooled_keep_alive_connection(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    proxy = make_proxy(upstream.url)
    for _ in range(3):
        assert (await proxy(make_request("GET", "/x"))).status == 200
    peers = {seen.peer for seen in upstream.seen}
    assert len(peers) == 1
    assert None not in peers


# ----------------------------------------------------------------- statuses


@pytest.mark.parametrize("status", [201, 404, 500])
async def test_upstream_status_and_body_pass_through(
    upstream: Upstream, make_proxy: ProxyFactory, status: int
) -> None:
    response = await make_proxy(upstream.url)(make_request("GET", f"/status/{status}"))
    assert (response.status, response.body) == (status, f"status {status}".encode())


async def test_204_has_no_body_and_keeps_its_headers(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    response = await make_proxy(upstream.url)(make_request("DELETE", "/status/204"))
    assert (response.status, response.body) == (204, b"")
    assert ("x-done", "yes") in response.headers


async def test_redirect_is_passed_back_not_followed(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    response = await make_proxy(upstream.url)(make_request("GET", "/status/301"))
    assert response.status == 301
    assert ("location", "/moved-here") in response.headers
    assert len(upstream.seen) == 1


# ----------------------------------------------------------------- request headers


async def test_client_headers_keep_order_and_repeats_and_nothing_is_added(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    headers = [("accept", "text/html"), ("x-tag", "one"), ("cookie", "a=1"), ("x-tag", "two")]
    await make_proxy(upstream.url)(make_request("POST", "/x", headers=headers, body=b"hi"))
    sent = [
        (n, v)
        for n, v in upstream.last.headers
        if n not in ("host", "content-length") and not n.startswith(("x-forwarded", "forw"))
    ]
    assert sent == headers  # no User-Agent, Accept-Encoding or Content-Type invented
    assert upstream.last.values("host") == [upstream.url.removeprefix("http://")]
    assert upstream.last.values("content-length") == ["2"]


async def test_hop_by_hop_and_connection_nominated_headers_are_stripped(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    headers = [
        ("connection", "keep-alive, X-Secret-Hop"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("te", "trailers"),
        ("trailer", "x-checksum"),
        ("upgrade", "websocket"),
        ("x-secret-hop", "1"),
        ("content-length", "999"),
        ("expect", "100-continue"),
        ("x-kept", "yes"),
    ]
    await make_proxy(upstream.url)(make_request("POST", "/x", headers=headers, body=b"abc"))
    names = {name for name, _ in upstream.last.headers}
    assert names.isdisjoint(
        {
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "te",
            "trailer",
            "upgrade",
            "x-secret-hop",
            "expect",
        }
    )
    assert upstream.last.values("content-length") == ["3"]
    assert upstream.last.values("x-kept") == ["yes"]
    assert upstream.last.body == b"abc"


async def test_forwarding_headers_are_appended_to_the_existing_chain(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    headers = [
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-for", "198.51.100.2"),
        ("forwarded", "for=198.51.100.1"),
        ("x-forwarded-proto", "ftp"),
    ]
    await make_proxy(upstream.url)(make_request("GET", "/x", headers=headers))
    seen = upstream.last
    assert seen.values("x-forwarded-for") == ["198.51.100.1, 198.51.100.2, 203.0.113.7"]
    assert seen.values("x-forwarded-proto") == ["https"]
    assert seen.values("x-forwarded-host") == ["api.example.com"]
    assert seen.values("forwarded") == [
        "for=198.51.100.1, for=203.0.113.7;proto=https;host=api.example.com"
    ]


async def test_forwarded_quotes_ipv6_clients_and_hosts_with_ports(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    await make_proxy(upstream.url)(
        make_request("GET", "/x", client="::1:40000", host="api.example.com:8443")
    )
    assert upstream.last.values("x-forwarded-for") == ["::1"]
    assert upstream.last.values("x-forwarded-host") == ["api.example.com:8443"]
    assert upstream.last.values("forwarded") == [
        'for="[::1]";proto=https;host="api.example.com:8443"'
    ]


# ----------------------------------------------------------------- response headers


async def test_response_headers_keep_repeats_and_lose_hop_by_hop_and_framing(
    raw_upstream: Callable[[RawReply], Awaitable[str]], make_proxy: ProxyFactory
) -> None:
    url = await raw_upstream(
        raw_response(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/plain\r\n"
            b"Set-Cookie: a=1\r\n"
            b"Connection: keep-alive, X-Internal\r\n"
            b"X-Internal: secret\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Proxy-Authenticate: Basic\r\n"
            b"Trailer: X-Checksum\r\n"
            b"Set-Cookie: b=2\r\n"
            b"Content-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n"
            b"\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
    )
    response = await make_proxy(url)(make_request("GET", "/x"))
    assert response.status == 200
    assert response.headers == [
        ("content-type", "text/plain"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("content-encoding", "gzip"),  # passed on as is: nothing is decompressed
    ]
    assert response.body == b"hello"


# ----------------------------------------------------------------- failures


async def test_upstream_not_listening_is_502_unavailable(make_proxy: ProxyFactory) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    response = await make_proxy(f"http://127.0.0.1:{port}")(make_request("GET", "/x"))
    assert response.status == 502
    assert problem_slug(response) == "upstream-unavailable"
    assert str(port) not in response.body.decode()  # internal addresses stay in the log


async def test_connection_reset_before_answering_is_502_unavailable(
    raw_upstream: Callable[[RawReply], Awaitable[str]], make_proxy: ProxyFactory
) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    response = await make_proxy(await raw_upstream(reset))(make_request("GET", "/x"))
    assert (response.status, problem_slug(response)) == (502, "upstream-unavailable")


async def test_malformed_response_is_502_bad_response(
    raw_upstream: Callable[[RawReply], Awaitable[str]], make_proxy: ProxyFactory
) -> None:
    url = await raw_upstream(raw_response(b"NOT HTTP AT ALL\r\n\r\n"))
    response = await make_proxy(url)(make_request("GET", "/x"))
    assert (response.status, problem_slug(response)) == (502, "upstream-bad-response")


async def test_slow_upstream_past_the_deadline_is_504(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    started = time.monotonic()
    response = await make_proxy(upstream.url)(
        make_request("GET", "/slow", query="s=3", timeout_ms=300)
    )
    elapsed = time.monotonic() - started
    assert (response.status, problem_slug(response)) == (504, "upstream-timeout")
    assert 0.25 < elapsed < 1.5


async def test_expired_deadline_answers_504_without_calling_the_upstream(
    upstream: Upstream, make_proxy: ProxyFactory
) -> None:
    response = await make_proxy(upstream.url)(make_request("GET", "/x", timeout_ms=-1))
    assert (response.status, problem_slug(response)) == (504, "upstream-timeout")
    assert upstream.seen == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_response_above_the_limit_is_502_too_large(
    upstream: Upstream, make_proxy: ProxyFactory, chunked: bool
) -> None:
    proxy = make_proxy(upstream.url, max_response_bytes=64 * 1024)
    query = f"n={MiB}" + ("&chunked=1" if chunked else "")
    response = await proxy(make_request("GET", "/big", query=query))
    assert (response.status, problem_slug(response)) == (502, "upstream-response-too-large")
    # At the limit exactly is fine.
    response = await proxy(make_request("GET", "/big", query=f"n={64 * 1024}"))
    assert (response.status, len(response.body)) == (200, 64 * 1024)


# ----------------------------------------------------------------- over a bus


async def test_routing_worker_answers_a_request_over_the_bus(upstream: Upstream) -> None:
    config = Config(
        routes=[
            Route(
                name="orders",
                when=When(path="/orders/{id}"),
                to=UpstreamTarget(type="upstream", upstream="shop", path="/api/{id}"),
            ),
        ],
        upstreams={"shop": HttpUpstream(url=upstream.url)},
    )
    codec = EnvelopeCodec()
    bus = MemoryBus(topics=Topics(), node_id="test-node", hub=MemoryHub())
    await bus.connect()
    worker = build_routing(config, codec)
    try:
        await worker.start(bus)
        assert GROUP in bus.hub.members["rg.req.orders"]  # replicas share the topic
        envelope = make_envelope(
            "POST",
            "/orders/42",
            params={"id": "42"},
            body=b"{}",
            headers=[("content-type", "application/json")],
        )
        envelope.replyto = bus.reply_address(envelope.correlationid)
        message = await bus.request(
            Topics().request("orders"),
            codec.encode(envelope),
            correlation_id=envelope.correlationid,
            timeout=5,
        )
    finally:
        await worker.close()
        await bus.close()
    reply = codec.decode(message.data)
    assert reply.type == REPLY
    assert reply.correlationid == envelope.correlationid
    assert reply.source == "relaygate://worker/test-node"
    assert reply.http is not None
    assert reply.http.status == 200
    assert ("content-type", "application/json") in reply.http.headers
    assert reply.data == b"{}"
    assert upstream.last.target == "/api/42"
    assert worker.topics == ["rg.req.orders"]
