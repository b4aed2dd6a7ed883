"""DNS discovery against a real DNS server (dnslib, on a free UDP port) whose records
the tests change: A and SRV answers become the upstream's instances, re-resolved by TTL,
and the routing worker proxies to what it found."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dns_server import LocalDns
from tests.support.reflector import Reflector
from tests.support.upstream_pool import discovering_pools, until
from tests.workers.test_resilience import served_by, start_reflectors
from tests.workers.test_routing import make_request
from workers.routing import HttpProxy, UpstreamPool

Pools = Callable[..., tuple[UpstreamPool, HttpProxy]]


@pytest.fixture
def dns() -> Iterator[LocalDns]:
    with LocalDns() as server:
        yield server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Reflector]]:
    started = start_reflectors(tmp_path_factory.mktemp("dns"), [None, None])
    yield started
    for reflector in started:
        reflector.stop()


@pytest.fixture
async def discovered(dns: LocalDns) -> AsyncIterator[Pools]:
    """`discovered(**dns options)`: a started pool and a proxy for route `orders`."""
    async with discovering_pools() as start:

        def build(**options: Any) -> tuple[UpstreamPool, HttpProxy]:
            discovery = {
                "type": "dns",
                "nameservers": ["127.0.0.1"],
                "nameserver_port": dns.port,
                "min_ttl_s": 0.1,
                "max_ttl_s": 1.0,
                "timeout_ms": 500,
                **options,
            }
            return start(discovery, None)

        yield build


def urls(pool: UpstreamPool) -> list[tuple[str, int, int]]:
    return sorted((i.url, i.group, i.weight) for i in pool.instances)


async def test_a_records_become_instances_and_follow_changes_by_ttl(
    dns: LocalDns, discovered: Pools, live: list[Reflector]
) -> None:
    port = live[0].port
    dns.set("orders.test", "A", ["127.0.0.1"], ttl=1)
    pool, proxy = discovered(name="orders.test", port=port)
    await until(lambda: urls(pool) == [(f"http://127.0.0.1:{port}", 0, 1)])
    response = await proxy(make_request("GET", "/orders/1", timeout_ms=3_000))
    assert served_by(response) == port

    # A second address appears; the first instance keeps its state (same object).
    first = pool.instances[0]
    first.ejections = 7
    dns.set("orders.test", "A", ["127.0.0.1", "127.0.0.2"], ttl=1)
    await until(lambda: len(pool.instances) == 2, timeout=3.0)
    assert pool.instances[0] is first
    assert first.ejections == 7
    assert pool.snapshot()["discovery"]["type"] == "dns"

    # The name goes away: the upstream is empty and answers a precise 503.
    dns.remove("orders.test")
    await until(lambda: pool.instances == [], timeout=8.0)
    response = await proxy(make_request("GET", "/orders/1", timeout_ms=3_000))
    assert response.status == 503
    assert b"has no instances" in response.body


async def test_srv_records_give_port_priority_group_and_weight(
    dns: LocalDns, discovered: Pools, live: list[Reflector]
) -> None:
    primary, backup = live
    dns.set("host.test", "A", ["127.0.0.1"], ttl=1)
    dns.set(
        "_http._tcp.orders.test",
        "SRV",
        [(10, 5, primary.port, "host.test"), (20, 1, backup.port, "host.test")],
        ttl=1,
    )
    pool, proxy = discovered(name="_http._tcp.orders.test", record="SRV")
    await until(lambda: len(pool.instances) == 2)
    assert urls(pool) == sorted(
        [(primary.url, 0, 5), (backup.url, 1, 1)]
    )  # priority 10 -> group 0 (primary), 20 -> group 1 (backup)
    response = await proxy(make_request("GET", "/orders/1", timeout_ms=3_000))
    assert served_by(response) == primary.port

    # The primary's record goes: traffic moves to the former backup, now alone.
    dns.set("_http._tcp.orders.test", "SRV", [(20, 1, backup.port, "host.test")], ttl=1)
    await until(lambda: urls(pool) == [(backup.url, 0, 1)], timeout=3.0)
    response = await proxy(make_request("GET", "/orders/1", timeout_ms=3_000))
    assert served_by(response) == backup.port


async def _queries_in_a_second(
    dns: LocalDns, discovered: Pools, name: str, ttl: int, min_ttl_s: float, max_ttl_s: float
) -> int:
    """How often a pool asks for `name` (answered with `ttl`) in a second, once it has it."""
    dns.set(name, "A", ["127.0.0.1"], ttl=ttl)
    pool, _ = discovered(name=name, port=8000, min_ttl_s=min_ttl_s, max_ttl_s=max_ttl_s)
    await until(lambda: len(pool.instances) == 1)
    before = dns.queries(name)
    await asyncio.sleep(1.0)
    return dns.queries(name) - before


async def test_ttl_is_respected_within_the_floor_and_ceiling(
    dns: LocalDns, discovered: Pools
) -> None:
    # The 60 s TTL is capped at 0.3 s: about three more queries, not zero.
    assert 2 <= await _queries_in_a_second(dns, discovered, "slow.test", 60, 0.1, 0.3) <= 5
    # TTL 0 is raised to the 0.5 s floor: about two queries a second, not a flood.
    assert 1 <= await _queries_in_a_second(dns, discovered, "fast.test", 0, 0.5, 5) <= 3


async def test_a_and_aaaa_together_with_a_scheme_and_base_path(
    dns: LocalDns, discovered: Pools
) -> None:
    dns.set("both.test", "A", ["127.0.0.1"], ttl=1)
    dns.set("both.test", "AAAA", ["::1"], ttl=1)
    pool, _ = discovered(
        name="both.test", record="A+AAAA", port=8443, scheme="https", base_path="/api"
    )
    await until(lambda: len(pool.instances) == 2)
    assert sorted(i.url for i in pool.instances) == [
        "https://127.0.0.1:8443/api",
        "https://[::1]:8443/api",
    ]


async def test_an_unreachable_nameserver_keeps_the_last_instances(
    dns: LocalDns, discovered: Pools, tmp_path: Path
) -> None:
    dns.set("orders.test", "A", ["127.0.0.1"], ttl=1)
    pool, _ = discovered(name="orders.test", port=8000, max_ttl_s=0.2, timeout_ms=200)
    await until(lambda: len(pool.instances) == 1)
    dns.__exit__()  # the DNS server goes away
    await until(lambda: pool.snapshot()["discovery"]["error"] is not None, timeout=3.0)
    assert len(pool.instances) == 1
