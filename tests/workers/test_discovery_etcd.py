"""etcd discovery against a real etcd (Debian etcd-server on free ports): instances put
under the service's prefix appear within 2 s (watched, not polled), deleted or
lease-expired ones leave, bad records are skipped, and an etcd restart is survived."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd import EtcdServer
from tests.support.processes import free_port
from tests.support.reflector import Reflector
from tests.support.upstream_pool import Discover, discovering_pools, instance_urls, until
from tests.workers.test_resilience import served_by, start_reflectors
from tests.workers.test_routing import make_request
from workers.routing import HttpProxy, UpstreamPool

pytestmark = pytest.mark.etcd

PREFIX = "/relaygate/services/orders/"


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Reflector]]:
    started = start_reflectors(tmp_path_factory.mktemp("etcd-up"), [None, None])
    yield started
    for reflector in started:
        reflector.stop()


@pytest.fixture
async def discovered() -> AsyncIterator[Discover]:
    """`discovered(endpoints, **etcd options)`: a started pool and its proxy."""
    async with discovering_pools() as start:

        def build(endpoints: list[str], **options: Any) -> tuple[UpstreamPool, HttpProxy]:
            return start({"type": "etcd", "endpoints": endpoints, **options}, None)

        yield build


@pytest.mark.slow
async def test_instances_follow_puts_deletes_and_lease_expiry_within_two_seconds(
    etcd: EtcdServer, live: list[Reflector], discovered: Callable[..., Any]
) -> None:
    first, second = live
    etcd.put(PREFIX + "a", {"url": first.url})
    etcd.put("/relaygate/services/other/x", {"url": "http://127.0.0.1:1"})  # not ours
    pool, proxy = discovered([etcd.url])
    await until(lambda: instance_urls(pool) == {first.url})
    assert served_by(await proxy(make_request("GET", "/o", timeout_ms=3_000))) == first.port

    # A new instance, registered with a 2 s lease, appears at once.
    lease = etcd.grant(2)
    state = pool.instances[0]
    etcd.put(PREFIX + "b", {"url": second.url, "weight": 3}, lease=lease)
    assert await until(lambda: instance_urls(pool) == {first.url, second.url}, timeout=2.0) < 2.0
    assert pool.instances[0] is state  # the one that stayed kept its state
    assert {i.url: i.weight for i in pool.instances}[second.url] == 3

    # Its owner stops renewing: etcd expires the lease, the watch sees the delete.
    took = await until(lambda: instance_urls(pool) == {first.url}, timeout=6.0)
    assert took < 2.0 + 2.0  # the lease TTL, then etcd's expiry and the watch

    # A plain delete leaves at once.
    etcd.delete(PREFIX + "a")
    assert await until(lambda: instance_urls(pool) == set(), timeout=2.0) < 2.0
    snapshot = pool.snapshot()
    assert snapshot["discovery"]["type"] == "etcd"
    assert snapshot["discovery"]["error"] is None


async def test_a_bad_record_is_skipped_and_the_others_kept(
    etcd: EtcdServer, live: list[Reflector], discovered: Callable[..., Any]
) -> None:
    etcd.put("/relaygate/services/billing/good", {"url": live[0].url})
    etcd.put("/relaygate/services/billing/bad", "not json")
    etcd.put("/relaygate/services/billing/ftp", {"url": "ftp://x"})
    pool, _ = discovered([etcd.url], service="billing")
    await until(lambda: instance_urls(pool) == {live[0].url})
    etcd.put("/relaygate/services/billing/good", {"url": live[0].url, "group": "x"})
    await until(lambda: instance_urls(pool) == set(), timeout=2.0)


async def test_an_unreachable_endpoint_fails_over_to_the_next(
    etcd: EtcdServer, live: list[Reflector], discovered: Callable[..., Any]
) -> None:
    etcd.put("/relaygate/services/search/a", {"url": live[1].url})
    pool, _ = discovered([f"http://127.0.0.1:{free_port()}", etcd.url], service="search")
    await until(lambda: instance_urls(pool) == {live[1].url}, timeout=5.0)


@pytest.mark.slow
async def test_instances_survive_an_etcd_restart_and_changes_resume(
    tmp_path: Path, live: list[Reflector], discovered: Callable[..., Any]
) -> None:
    server = EtcdServer(tmp_path).start()
    try:
        server.put(PREFIX + "a", {"url": live[0].url})
        pool, _ = discovered([server.url])
        await until(lambda: instance_urls(pool) == {live[0].url})
        server.stop()
        await until(lambda: pool.snapshot()["discovery"]["error"] is not None, timeout=5.0)
        assert instance_urls(pool) == {live[0].url}  # the last known set is kept
        server.start()  # same port, same data dir
        server.put(PREFIX + "b", {"url": live[1].url})
        await until(lambda: instance_urls(pool) == {live[0].url, live[1].url}, timeout=15.0)
    finally:
        server.stop()
