"""SSRF: webhook URLs reach public addresses only, unless `bridge.allow_networks` says
otherwise. Refused at registration (every spelling of an internal address, names that
resolve to one, non-HTTP schemes), at connect time (the resolver), and never by
following a redirect. A sentinel server on loopback must receive nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bridge.ssrf import AddressPolicy, GuardedResolver, UnsafeUrl, check_url
from tests.bridge.support import Bridge, Publisher, Receiver, eventually, unique_prefix
from tests.support.processes import NatsServer, free_port


class Sentinel:
    """Counts every request that reaches it, on 127.0.0.1."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def _hit(self, request: web.Request) -> web.Response:
        self.hits.append(f"{request.method} {request.path_qs}")
        return web.Response(text="internal secret")

    async def start(self) -> Sentinel:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._hit)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def sentinel() -> AsyncIterator[Sentinel]:
    sentinel = await Sentinel().start()
    yield sentinel
    await sentinel.stop()


def internal_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/",
        f"http://2130706433:{port}/",  # decimal
        f"http://0x7f000001:{port}/",  # hex
        f"http://0x7f.0.0.1:{port}/",
        f"http://0177.0.0.1:{port}/",  # octal
        f"http://127.1:{port}/",  # short
        f"http://127.0.1:{port}/",
        f"https://127.0.0.1:{port}/",
        f"http://localhost:{port}/",  # a name that resolves to loopback
        f"http://LOCALHOST:{port}/",
        f"http://[::1]:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://[::ffff:7f00:1]:{port}/",
        f"http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/",
        f"http://[64:ff9b::7f00:1]:{port}/",  # NAT64 of 127.0.0.1
        f"http://[2002:7f00:1::]:{port}/",  # 6to4 of 127.0.0.1
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://2852039166/latest/meta-data/",  # 169.254.169.254, decimal
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://10.0.0.1/",
        "http://10.255.255.254/",
        "http://172.16.0.1/",
        "http://172.31.255.254/",
        "http://192.168.0.1/",
        "http://192.168.255.254/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://100.127.255.254/",
        f"http://0.0.0.0:{port}/",
        f"http://0:{port}/",
        f"http://[::]:{port}/",
        "http://[fd00::1]/",
        "http://[fc00::1]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "ftp://127.0.0.2/",
        "file:///etc/passwd",
        f"gopher://127.0.0.2:{port}/_GET",
        "javascript:alert(1)",
        f"http://user:pw@127.0.0.2:{port}/",
        "http:///nohost",
    ]


@pytest.mark.parametrize("url", internal_urls(8080))
async def test_internal_urls_are_refused_by_default(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        await check_url(url, AddressPolicy())


async def test_an_allow_list_lets_chosen_networks_through() -> None:
    policy = AddressPolicy(["127.0.0.2/32", "fd00::/8"])
    await check_url("http://127.0.0.2:9/", policy)
    await check_url("http://[fd00::1]/", policy)
    with pytest.raises(UnsafeUrl):
        await check_url("http://127.0.0.1:9/", policy)
    await check_url("https://93.184.215.14/hook", AddressPolicy())  # public: fine


async def test_the_resolver_refuses_internal_addresses_at_connect_time(
    sentinel: Sentinel,
) -> None:
    """A name checked at registration may resolve elsewhere later: every connection
    resolves through the guard."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(AddressPolicy()))
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError, match="loopback"):
            await session.get(f"http://localhost:{sentinel.port}/")
    assert sentinel.hits == []


@pytest.fixture
def guarded_bridge(tmp_path: Path, nats_server: NatsServer) -> Iterator[Bridge]:
    """Only 127.0.0.2 allowed: the redirector lives there, the sentinel on 127.0.0.1."""
    process = Bridge(
        tmp_path, "bridge", nats_server.url, unique_prefix(), allow_networks=["127.0.0.2/32"]
    )
    process.start().wait_ready()
    yield process
    process.stop()


@pytest.mark.nats
@pytest.mark.e2e
async def test_the_bridge_refuses_internal_urls_and_follows_no_redirect(
    guarded_bridge: Bridge, sentinel: Sentinel, nats_server: NatsServer
) -> None:
    urls = internal_urls(sentinel.port)
    assert len(urls) >= 30
    for url in urls:
        response = guarded_bridge.api("POST", "/endpoints", json={"url": url})
        assert response.status_code == 422, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert guarded_bridge.api("GET", "/endpoints").json() == []

    redirect_to = f"http://127.0.0.1:{sentinel.port}/"
    redirector = await Receiver(host="127.0.0.2", answer=lambda n: 302).start()
    publisher = await Publisher(nats_server.url, guarded_bridge.prefix).connect()
    try:
        created = guarded_bridge.register(redirector.url + "?next=" + redirect_to)
        patched = guarded_bridge.api(
            "PATCH", f"/endpoints/{created['id']}", json={"url": redirect_to}
        )
        assert patched.status_code == 422
        await publisher.publish("order.created")
        await eventually(lambda: len(redirector.received) == 3, what="all attempts")
        attempts = guarded_bridge.api("GET", f"/endpoints/{created['id']}/attempts").json()
        assert {a["status"] for a in attempts} == {302}
    finally:
        await publisher.close()
        await redirector.stop()
    assert sentinel.hits == []
