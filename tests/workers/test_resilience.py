"""Resilience of the routing worker against real upstream processes that the tests start,
kill (SIGKILL) and restart on the same port: circuit breaker, active health checks,
passive outlier ejection, failover groups, balancing and retries."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.config import Config, HttpUpstream, Route, UpstreamTarget, When
from contracts.topics import Topics
from ingress.admin import build_admin
from ingress.app import IngressApp
from tests.support.processes import ManagedProcess, free_port, wait_for_port
from tests.support.reflector import Reflector
from tests.workers.test_routing import make_request, problem_slug
from workers.routing import HttpProxy, UpstreamPool, build_routing
from workers.routing.health import Instance
from workers.routing.session import open_session
from workers.sdk import Response

StartReflector = Callable[..., list[Reflector]]
ProxyFactory = Callable[..., HttpProxy]

# Fast checks so that state changes take tens of milliseconds, not seconds.
FAST_HEALTH = {
    "path": "/healthz",
    "interval_ms": 30,
    "timeout_ms": 200,
    "healthy_threshold": 2,
    "unhealthy_threshold": 2,
}
# Outlier ejection and the breaker out of the way, for tests about something else.
NO_OUTLIER = {"consecutive_failures": 1000, "eject_ms": 1}
NO_BREAKER = {"min_calls": 1000}
NO_RETRY = {"attempts": 1}


def start_reflectors(workdir: Path, ports: list[int | None]) -> list[Reflector]:
    """Reflector processes started side by side: each takes ~0.5 s to listen."""
    started = [Reflector(workdir, port) for port in ports]
    for reflector in started:
        ManagedProcess.start(reflector)
    for reflector in started:
        wait_for_port(reflector.port, proc=reflector.proc)
    return started


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Reflector]]:
    """Three reflectors shared by the tests that never stop them."""
    started = start_reflectors(tmp_path_factory.mktemp("live"), [None, None, None])
    yield started
    for reflector in started:
        reflector.stop()


@pytest.fixture
def reflectors(tmp_path: Path) -> Iterator[StartReflector]:
    """`reflectors(count)` new ones, or `reflectors(port=p)` to restart a killed one."""
    started: list[Reflector] = []

    def start(count: int = 1, port: int | None = None) -> list[Reflector]:
        ports: list[int | None] = [port] if port is not None else [None] * count
        new = start_reflectors(tmp_path, ports)
        started.extend(new)
        return new

    yield start
    for reflector in started:
        reflector.stop()


def dead_url() -> str:
    """A port nothing listens on: every connection is refused, like a killed process."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
async def make_proxy() -> AsyncIterator[ProxyFactory]:
    """`make_proxy(**upstream options)`: a proxy for route `orders`, its pool started."""
    pools: list[UpstreamPool] = []

    def build(**options: Any) -> HttpProxy:
        options.setdefault("outlier", NO_OUTLIER)
        options.setdefault("breaker", NO_BREAKER)
        options.setdefault("retries", NO_RETRY)
        upstream = HttpUpstream(**options)
        route = Route(
            name="orders",
            when=When(path="/{rest:path}"),
            to=UpstreamTarget(type="upstream", upstream="orders"),
        )
        pool = UpstreamPool("orders", upstream, open_session(upstream))
        pool.start()
        pools.append(pool)
        return HttpProxy(route, pool)

    yield build
    for pool in pools:
        await pool.close()


def targets(*servers: Reflector | str, groups: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    urls = [s if isinstance(s, str) else s.url for s in servers]
    return [{"url": url, "group": groups[i] if groups else 0} for i, url in enumerate(urls)]


def served_by(response: Response) -> int:
    """The port of the reflector that answered (it reflects the Host header it got)."""
    assert response.status == 200, response.body
    headers = dict(orjson.loads(response.body)["headers"])
    return int(headers["host"].rsplit(":", 1)[1])


async def send(proxy: HttpProxy, method: str = "GET", **kwargs: Any) -> Response:
    return await proxy(make_request(method, "/orders/1", timeout_ms=3_000, **kwargs))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def instance(proxy: HttpProxy, reflector: Reflector) -> dict[str, Any]:
    state: dict[str, Any] = next(
        i for i in proxy_pool(proxy).snapshot()["instances"] if i["url"] == reflector.url
    )
    return state


def proxy_pool(proxy: HttpProxy) -> UpstreamPool:
    pool: UpstreamPool = proxy._pool
    return pool


# ----------------------------------------------------------------- circuit breaker


async def test_breaker_opens_on_a_killed_upstream_then_half_opens_and_closes_after_restart(
    reflectors: StartReflector, make_proxy: ProxyFactory
) -> None:
    (upstream,) = reflectors()
    proxy = make_proxy(
        url=upstream.url,
        breaker={
            "window_s": 10,
            "min_calls": 4,
            "failure_rate": 0.5,
            "open_ms": 300,
            "half_open_calls": 2,
        },
    )
    breaker = proxy_pool(proxy).breaker
    assert (await send(proxy)).status == 200
    upstream.kill()
    for _ in range(3):
        response = await send(proxy)
        assert (response.status, problem_slug(response)) == (502, "upstream-unavailable")
    assert breaker.snapshot()["state"] == "open"  # 3 failures of 4 calls

    started = time.monotonic()
    response = await send(proxy)
    assert time.monotonic() - started < 0.05
    assert (response.status, problem_slug(response)) == (503, "upstream-circuit-open")
    assert ("retry-after", "1") in response.headers

    # Half-open with the upstream still dead: the trial call fails and it opens again.
    await asyncio.sleep(0.32)
    assert (await send(proxy)).status == 502
    assert breaker.snapshot()["state"] == "open"
    assert problem_slug(await send(proxy)) == "upstream-circuit-open"

    reflectors(port=upstream.port)
    await asyncio.sleep(0.32)
    assert (await send(proxy)).status == 200
    assert breaker.snapshot()["state"] == "half_open"
    assert (await send(proxy)).status == 200
    assert breaker.snapshot()["state"] == "closed"
    assert breaker.snapshot()["opened"] == 2


async def test_upstream_5xx_answers_count_as_failures_for_the_breaker(
    live: list[Reflector], make_proxy: ProxyFactory
) -> None:
    proxy = make_proxy(
        url=live[0].url, breaker={"min_calls": 3, "failure_rate": 1.0, "open_ms": 5_000}
    )
    for _ in range(3):
        assert (await send(proxy, headers=[("x-reflect-status", "500")])).status == 500
    response = await send(proxy)
    assert (response.status, problem_slug(response)) == (503, "upstream-circuit-open")
    assert ("retry-after", "5") in response.headers


# ----------------------------------------------------------------- health


async def test_health_checks_eject_a_killed_instance_and_readmit_it_after_restart(
    reflectors: StartReflector, make_proxy: ProxyFactory
) -> None:
    a, b = reflectors(2)
    proxy = make_proxy(targets=targets(a, b), health=FAST_HEALTH)
    assert {served_by(await send(proxy)) for _ in range(4)} == {a.port, b.port}

    a.kill()
    await until(lambda: not instance(proxy, a)["healthy"])
    assert instance(proxy, a)["available"] is False
    assert {served_by(await send(proxy)) for _ in range(6)} == {b.port}

    reflectors(port=a.port)
    await until(lambda: instance(proxy, a)["healthy"])
    assert {served_by(await send(proxy)) for _ in range(4)} == {a.port, b.port}


async def test_consecutive_failures_eject_an_instance_until_eject_ms_has_passed(
    reflectors: StartReflector, make_proxy: ProxyFactory
) -> None:
    a, b = reflectors(2)
    proxy = make_proxy(targets=targets(a, b), outlier={"consecutive_failures": 2, "eject_ms": 400})
    a.kill()
    statuses = Counter([(await send(proxy)).status for _ in range(4)])  # a, b, a, b
    assert statuses == {502: 2, 200: 2}
    state = instance(proxy, a)
    assert (state["ejected"], state["ejections"], state["healthy"]) == (True, 1, True)
    assert {served_by(await send(proxy)) for _ in range(6)} == {b.port}

    reflectors(port=a.port)
    await until(lambda: not instance(proxy, a)["ejected"], timeout=2)
    assert {served_by(await send(proxy)) for _ in range(4)} == {a.port, b.port}


async def test_no_available_instance_is_a_fast_503_with_retry_after(
    reflectors: StartReflector, make_proxy: ProxyFactory
) -> None:
    (upstream,) = reflectors()
    proxy = make_proxy(url=upstream.url, health=FAST_HEALTH)
    upstream.kill()
    await until(lambda: not instance(proxy, upstream)["available"])
    response = await send(proxy)
    assert (response.status, problem_slug(response)) == (503, "upstream-no-healthy-instance")
    assert ("retry-after", "1") in response.headers


# ----------------------------------------------------------------- failover


async def test_traffic_fails_over_to_the_backup_group_and_returns_to_the_primary(
    reflectors: StartReflector, make_proxy: ProxyFactory
) -> None:
    primary, backup = reflectors(2)
    proxy = make_proxy(
        targets=targets(primary, backup, groups=(0, 1)),
        health=FAST_HEALTH,
        retries={"attempts": 2, "budget_ratio": 1.0},
    )
    assert {served_by(await send(proxy)) for _ in range(4)} == {primary.port}

    primary.kill()
    # Before the checks notice, a failed GET is retried on the backup: no client error.
    assert served_by(await send(proxy)) == backup.port
    await until(lambda: not instance(proxy, primary)["available"])
    assert {served_by(await send(proxy)) for _ in range(4)} == {backup.port}

    reflectors(port=primary.port)
    await until(lambda: instance(proxy, primary)["available"])
    assert {served_by(await send(proxy)) for _ in range(4)} == {primary.port}


# ----------------------------------------------------------------- balancing


async def test_round_robin_spreads_requests_evenly_over_two_instances(
    live: list[Reflector], make_proxy: ProxyFactory
) -> None:
    a, b, _ = live
    proxy = make_proxy(targets=targets(a, b), balance="round_robin")
    counts = Counter([served_by(await send(proxy)) for _ in range(10)])
    assert counts == {a.port: 5, b.port: 5}


async def test_least_outstanding_prefers_the_idle_instance(
    live: list[Reflector], make_proxy: ProxyFactory
) -> None:
    a, b, _ = live
    proxy = make_proxy(targets=targets(a, b), balance="least_outstanding")
    slow = asyncio.create_task(send(proxy, headers=[("x-reflect-delay-ms", "600")]))
    await until(lambda: instance(proxy, a)["outstanding"] + instance(proxy, b)["outstanding"] == 1)
    busy = a if instance(proxy, a)["outstanding"] else b
    idle = b if busy is a else a
    fast = [served_by(await send(proxy)) for _ in range(5)]
    assert not slow.done()
    assert fast == [idle.port] * 5
    assert served_by(await slow) == busy.port


async def test_consistent_hash_keeps_each_key_on_one_instance(
    live: list[Reflector], make_proxy: ProxyFactory
) -> None:
    a, b, c = live
    proxy = make_proxy(targets=targets(a, b, c), balance="consistent_hash", hash_key="X-User")
    owners: dict[str, set[int]] = {}
    for _ in range(3):
        for n in range(12):
            user = f"user-{n}"
            port = served_by(await send(proxy, headers=[("x-user", user)]))
            owners.setdefault(user, set()).add(port)
    assert all(len(ports) == 1 for ports in owners.values())
    assert len(set().union(*owners.values())) >= 2  # the keys spread


async def test_consistent_hash_defaults_to_the_client_address(
    live: list[Reflector], make_proxy: ProxyFactory
) -> None:
    a, b, _ = live
    proxy = make_proxy(targets=targets(a, b), balance="consistent_hash")
    for n in range(6):
        client = f"198.51.100.{n}:{40000 + n}"
        ports = {served_by(await send(proxy, client=client)) for _ in range(3)}
        assert len(ports) == 1


# ----------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("method", "headers", "retried"),
    [
        ("GET", [], True),
        ("PUT", [], True),
        ("DELETE", [], True),
        ("POST", [], False),
        ("PATCH", [], False),
        ("POST", [("idempotency-key", "k-1")], True),
    ],
)
async def test_only_idempotent_requests_are_retried_on_another_instance(
    live: list[Reflector],
    make_proxy: ProxyFactory,
    method: str,
    headers: list[tuple[str, str]],
    retried: bool,
) -> None:
    proxy = make_proxy(
        targets=targets(dead_url(), live[0]), retries={"attempts": 2, "budget_ratio": 1.0}
    )
    statuses = [(await send(proxy, method, headers=headers)).status for _ in range(4)]
    if retried:
        assert statuses == [200] * 4
    else:
        assert sorted(statuses) == [200, 200, 502, 502]


async def test_retries_stop_when_the_budget_is_spent(
    live: list[Reflector], make_proxy: ProxyFactory
) -> None:
    proxy = make_proxy(
        targets=targets(dead_url(), live[0]),
        retries={"attempts": 3, "budget_ratio": 0.0, "min_retries": 2},
    )
    statuses = [(await send(proxy)).status for _ in range(8)]  # every other one hits `dead`
    assert statuses.count(502) == 2  # 4 hit `dead` first; the budget rescued 2


async def test_retry_budget_grows_with_the_request_rate(
    live: list[Reflector], make_proxy: ProxyFactory
) -> None:
    proxy = make_proxy(
        targets=targets(dead_url(), live[0]),
        retries={"attempts": 2, "budget_ratio": 0.25, "min_retries": 0},
    )
    statuses = [(await send(proxy)).status for _ in range(20)]
    # 10 requests hit `dead` first; retries may add at most a quarter of the requests.
    retries = 10 - statuses.count(502)
    assert 1 <= retries <= 0.25 * 20


# ----------------------------------------------------------------- admin API


def test_instance_state_hides_credentials_in_urls() -> None:
    state = Instance("http://user:secret@10.0.0.1:8000").snapshot(0.0)
    assert state["url"] == "http://***:***@10.0.0.1:8000"


async def test_admin_upstreams_shows_each_worker_state_and_drops_silent_ones(
    reflectors: StartReflector,
) -> None:
    a, b = reflectors(2)
    config = Config(
        routes=[
            Route(
                name="orders",
                when=When(path="/orders/{id}"),
                to=UpstreamTarget(type="upstream", upstream="shop"),
            )
        ],
        upstreams={
            "shop": HttpUpstream.model_validate(
                {"targets": [{"url": a.url}, {"url": b.url, "group": 1}], "health": FAST_HEALTH}
            )
        },
    )
    hub = MemoryHub()
    worker_bus = MemoryBus(topics=Topics(), node_id="routing-1", hub=hub)
    ingress_bus = MemoryBus(topics=Topics(), node_id="ingress-1", hub=hub)
    await worker_bus.connect()
    await ingress_bus.connect()
    admin = build_admin(IngressApp(config, ingress_bus), config)
    admin.state.upstreams.stale_s = 0.5
    await admin.state.subscribing
    worker = build_routing(config, state_interval_s=0.05)
    transport = httpx.ASGITransport(app=admin)
    try:
        await worker.start(worker_bus)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:

            async def shop() -> dict[str, Any] | None:
                workers = (await client.get("/upstreams")).json()["workers"]
                if not workers:
                    return None
                assert [w["node"] for w in workers] == ["routing-1"]
                state: dict[str, Any] = workers[0]["upstreams"]["shop"]
                return state

            state = None
            deadline = time.monotonic() + 5
            while state is None:
                assert time.monotonic() < deadline
                state = await shop()
                await asyncio.sleep(0.02)
            assert state["breaker"]["state"] == "closed"
            assert [(i["url"], i["group"]) for i in state["instances"]] == [
                (a.url, 0),
                (b.url, 1),
            ]
            a.kill()
            deadline = time.monotonic() + 5
            while True:
                state = await shop()
                assert state is not None
                if not state["instances"][0]["healthy"]:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert state["instances"][0]["available"] is False
            assert state["instances"][1]["available"] is True

            await worker.close()  # silent from now on: dropped after the stale time
            deadline = time.monotonic() + 3
            while await shop() is not None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    finally:
        await worker.close()
        await worker_bus.close()
        await ingress_bus.close()
