"""Upstream pools in the test process, for the routing worker's discovery tests: a
pool that discovers its instances, the proxy of route `orders` in front of it, and a
wait for what the pool should come to know."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from contracts.bus import Bus
from contracts.config import HttpUpstream, Route, UpstreamTarget, When
from workers.routing import HttpProxy, UpstreamPool
from workers.routing.session import open_session

Discover = Callable[..., tuple[UpstreamPool, HttpProxy]]


def orders_proxy(pool: UpstreamPool) -> HttpProxy:
    """The proxy of route `orders` (every path) to the pool's upstream."""
    route = Route(
        name="orders",
        when=When(path="/{rest:path}"),
        to=UpstreamTarget(type="upstream", upstream="orders"),
    )
    return HttpProxy(route, pool)


@asynccontextmanager
async def discovering_pools() -> AsyncIterator[
    Callable[[Mapping[str, Any], Bus | None], tuple[UpstreamPool, HttpProxy]]
]:
    """`start(discovery, bus)`: a started pool for upstream `orders` with the
    `discovery:` settings given (and no retries), and its proxy; closed at the end."""
    pools: list[UpstreamPool] = []

    def start(discovery: Mapping[str, Any], bus: Bus | None) -> tuple[UpstreamPool, HttpProxy]:
        upstream = HttpUpstream.model_validate(
            {"discovery": dict(discovery), "retries": {"attempts": 1}}
        )
        pool = UpstreamPool("orders", upstream, open_session(upstream))
        pool.start(bus)
        pools.append(pool)
        return pool, orders_proxy(pool)

    try:
        yield start
    finally:
        for pool in pools:
            await pool.close()


def instance_urls(pool: UpstreamPool) -> set[str]:
    return {instance.url for instance in pool.instances}


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> float:
    """Wait until `condition()` holds; the seconds it took."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not reached in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start
