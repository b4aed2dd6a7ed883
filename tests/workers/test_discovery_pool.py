"""The pool's side of discovery: a new instance set keeps the state of instances that
stay, weights shape the balancing, proxies reach instances added after they were built,
and a reload starts from the instances the previous routing worker knew."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from contracts.config import Config, HttpUpstream, UpstreamInstance
from tests.support.processes import free_port
from tests.support.reflector import Reflector
from tests.support.upstream_pool import orders_proxy
from tests.workers.test_resilience import served_by, start_reflectors, until
from tests.workers.test_routing import make_request
from workers.routing import UpstreamPool, build_routing
from workers.routing.balancer import ConsistentHash, WeightedRoundRobin
from workers.routing.health import Instance
from workers.routing.session import open_session

ETCD = {"type": "etcd", "endpoints": ["http://127.0.0.1:9"]}


def target(url: str, group: int = 0, weight: int = 1) -> UpstreamInstance:
    return UpstreamInstance(url=url, group=group, weight=weight)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Reflector]]:
    started = start_reflectors(tmp_path_factory.mktemp("pool"), [None, None])
    yield started
    for reflector in started:
        reflector.stop()


async def test_a_new_set_keeps_the_state_of_instances_that_stay(live: list[Reflector]) -> None:
    upstream = HttpUpstream.model_validate({"discovery": ETCD, "retries": {"attempts": 1}})
    pool = UpstreamPool("orders", upstream, open_session(upstream))
    proxy = orders_proxy(pool)  # built while the pool is still empty
    try:
        response = await proxy(make_request("GET", "/x", timeout_ms=3_000))
        assert response.status == 503

        first, second = live
        pool.set_instances([target(first.url)])
        kept = pool.instances[0]
        kept.ejections, kept.outstanding = 3, 2
        generation = pool.generation
        pool.set_instances([target(first.url)])  # the same set: nothing happens
        assert pool.generation == generation

        pool.set_instances([target(second.url, weight=2), target(first.url, group=1)])
        assert pool.generation == generation + 1
        assert kept in pool.instances
        assert (kept.ejections, kept.outstanding, kept.group) == (3, 2, 1)
        # The proxy reaches the instance added after it was built (group 0 now).
        assert served_by(await proxy(make_request("GET", "/x", timeout_ms=3_000))) == second.port
        assert {i["url"]: i["weight"] for i in pool.snapshot()["instances"]} == {
            first.url: 1,
            second.url: 2,
        }
    finally:
        await pool.close()


def test_smooth_weighted_round_robin_gives_each_its_share_interleaved() -> None:
    heavy, light = Instance("http://a:1", weight=3), Instance("http://b:1", weight=1)
    balancer = WeightedRoundRobin()
    picks = [balancer.pick([heavy, light], "") for _ in range(8)]
    assert Counter(picks) == {heavy: 6, light: 2}
    assert picks[:4].count(light) == 1  # interleaved, not three heavies then a light


def test_a_heavier_instance_gets_more_of_the_hash_ring() -> None:
    heavy, light = Instance("http://a:1", weight=4), Instance("http://b:1", weight=1)
    ring = ConsistentHash([heavy, light])
    owners = Counter(ring.pick([heavy, light], f"key-{n}") for n in range(2000))
    assert owners[heavy] > 2.5 * owners[light]


async def test_a_reload_starts_from_the_instances_the_previous_worker_knew() -> None:
    config = Config.model_validate(
        {
            "routes": [
                {
                    "name": "orders",
                    "when": {"path": "/o"},
                    "to": {"type": "upstream", "upstream": "orders"},
                }
            ],
            "upstreams": {"orders": {"discovery": ETCD}},
        }
    )
    before = build_routing(config)
    after = build_routing(config)
    try:
        before.pools["orders"].set_instances([target("http://127.0.0.1:8001", weight=2)])
        after.adopt_instances(before)
        assert after.pools["orders"].known_instances() == [
            target("http://127.0.0.1:8001", weight=2)
        ]
    finally:
        await before.close()
        await after.close()


def test_discovery_and_targets_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="give no `url` or `targets`"):
        HttpUpstream.model_validate({"url": "http://a:1", "discovery": ETCD})
    with pytest.raises(ValueError, match="`port` is required"):
        HttpUpstream.model_validate({"discovery": {"type": "dns", "name": "a.test"}})
    static = HttpUpstream.model_validate({"url": "http://a:1", "discovery": {"type": "static"}})
    assert not static.discovered
    assert [t.url for t in static.instances()] == ["http://a:1"]


async def test_active_health_checks_follow_the_new_instance_set(live: list[Reflector]) -> None:
    health = {"interval_ms": 30, "timeout_ms": 200, "unhealthy_threshold": 2}
    upstream = HttpUpstream.model_validate({"targets": [{"url": live[0].url}], "health": health})
    pool = UpstreamPool("orders", upstream, open_session(upstream))
    pool.start()
    try:
        dead = f"http://127.0.0.1:{free_port()}"
        pool.set_instances([target(live[0].url), target(dead)])
        await until(lambda: not {i.url: i for i in pool.instances}[dead].healthy)
        assert {i.url: i for i in pool.instances}[live[0].url].healthy
        pool.set_instances([target(dead)])  # the dead one stays: still unhealthy
        assert not pool.instances[0].healthy
    finally:
        await pool.close()
