"""Bus discovery against real brokers: services announce themselves (`relaygate
announce` processes, or the `announce` SDK helper) on NATS (a JetStream KV bucket with a
TTL) and on Kafka (a compacted topic); the routing worker's pool sees them within 2 s,
drops them at once on a clean stop, and after their TTL when they die."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts.bus import Bus, create_bus
from contracts.topics import Topics
from tests.support.gateway import relaygate_argv, relaygate_env
from tests.support.processes import ManagedProcess, NatsServer, free_port
from tests.support.reflector import Reflector
from tests.support.upstream_pool import Discover, discovering_pools, instance_urls, until
from tests.workers.test_resilience import served_by
from tests.workers.test_routing import make_request
from workers.routing import HttpProxy, UpstreamPool
from workers.routing.discovery.announce import announce


async def connected(url: str) -> Bus:
    bus = create_bus(url, node_id=f"test-{free_port()}", topics=Topics("rg"))
    await bus.connect()
    return bus


@pytest.fixture
async def discovered() -> AsyncIterator[Discover]:
    """`discovered(bus, **bus options)`: a started pool and its proxy."""
    async with discovering_pools() as start:

        def build(bus: Bus, **options: object) -> tuple[UpstreamPool, HttpProxy]:
            return start({"type": "bus", **options}, bus)

        yield build


class Announcer(ManagedProcess):
    def __init__(self, workdir: Path, bus_url: str, url: str, ttl_s: float) -> None:
        super().__init__(
            relaygate_argv(
                "announce",
                "--bus",
                bus_url,
                "--service",
                "orders",
                "--url",
                url,
                "--ttl",
                str(ttl_s),
            ),
            workdir / f"announce-{free_port()}.log",
            env=relaygate_env(),
        )


@pytest.mark.nats
@pytest.mark.e2e
async def test_nats_announcements_appear_leave_on_stop_and_expire_on_death(
    nats_server: NatsServer, tmp_path: Path, discovered: Discover
) -> None:
    upstream = Reflector(tmp_path).start()
    bus = await connected(nats_server.url)
    try:
        pool, proxy = discovered(bus)
        first = Announcer(tmp_path, nats_server.url, upstream.url, ttl_s=2).start()
        assert await until(lambda: instance_urls(pool) == {upstream.url}, timeout=10.0) < 10.0
        response = await proxy(make_request("GET", "/o", timeout_ms=3_000))
        assert served_by(response) == upstream.port
        assert pool.snapshot()["discovery"]["type"] == "bus"

        # A clean stop says goodbye: gone at once, not after the TTL.
        first.signal(signal.SIGTERM)
        assert await until(lambda: instance_urls(pool) == set(), timeout=1.5) < 1.5
        assert first.proc is not None
        assert first.proc.wait(5) == 0

        # A killed one leaves when its TTL (2 s) has run out since its last heartbeat.
        second = Announcer(tmp_path, nats_server.url, upstream.url, ttl_s=2).start()
        await until(lambda: instance_urls(pool) == {upstream.url}, timeout=10.0)
        await asyncio.sleep(1.0)  # a heartbeat or two
        second.kill()
        took = await until(lambda: instance_urls(pool) == set(), timeout=4.0)
        assert took <= 2.0 + 0.5
        # ... and not before its TTL: the last heartbeat is at most ttl/3 old at kill.
        assert took >= 2.0 - 2.0 / 3 - 0.1
    finally:
        await bus.close()
        upstream.stop()


@pytest.mark.nats
async def test_sdk_announce_with_weight_and_group_and_a_second_service(
    nats_server: NatsServer, discovered: Discover
) -> None:
    bus = await connected(nats_server.url)
    try:
        pool, _ = discovered(bus, ttl_s=5)
        async with (
            announce(nats_server.url, "orders", "http://127.0.0.1:8001", 3, weight=4),
            announce(nats_server.url, "orders", "http://127.0.0.1:8002", 3, group=1),
            announce(nats_server.url, "billing", "http://127.0.0.1:8003", 3),
        ):
            assert await until(lambda: len(pool.instances) == 2, timeout=2.0) < 2.0
            found = {i.url: (i.group, i.weight) for i in pool.instances}
            assert found == {"http://127.0.0.1:8001": (0, 4), "http://127.0.0.1:8002": (1, 1)}
        await until(lambda: pool.instances == [], timeout=1.0)
    finally:
        await bus.close()


async def test_announce_refuses_bad_arguments_before_sending() -> None:
    with pytest.raises(ValueError, match="url"):
        async with announce("nats://127.0.0.1:1", "orders", "ftp://x"):
            pass
    with pytest.raises(ValueError, match="service"):
        async with announce("nats://127.0.0.1:1", "or.ders", "http://x"):
            pass
    with pytest.raises(ValueError, match="nats://"):
        async with announce("redis://x", "orders", "http://x"):
            pass


def test_announce_cli_says_one_line_and_exits_non_zero_on_bad_input() -> None:
    bad = subprocess.run(
        relaygate_argv("announce", "--bus", "nats://127.0.0.1:1", "--service", "o", "--url", "x"),
        capture_output=True,
        text=True,
        env=relaygate_env(),
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("relaygate announce: url:")
    unreachable = subprocess.run(
        relaygate_argv(
            "announce",
            "--bus",
            f"nats://127.0.0.1:{free_port()}",
            "--service",
            "o",
            "--url",
            "http://127.0.0.1:9",
        ),
        capture_output=True,
        text=True,
        env=relaygate_env(),
        timeout=60,
        check=False,
    )
    assert unreachable.returncode == 1, unreachable.stderr
    assert "cannot announce" in unreachable.stderr.strip().splitlines()[-1]


@pytest.mark.kafka
@pytest.mark.e2e
async def test_kafka_announcements_appear_leave_on_tombstone_and_expire_on_death(
    kafka_url: str, tmp_path: Path, discovered: Discover
) -> None:
    bus = await connected(kafka_url)
    try:
        pool, _ = discovered(bus)
        async with announce(kafka_url, "orders", "http://127.0.0.1:8001", 2, weight=2):
            assert await until(lambda: len(pool.instances) == 1, timeout=5.0) < 5.0
            assert pool.instances[0].weight == 2
        # The tombstone removes it at once.
        assert await until(lambda: pool.instances == [], timeout=2.0) < 2.0

        # A killed announcer leaves no tombstone: the reader expires it by its TTL.
        dying = Announcer(tmp_path, kafka_url, "http://127.0.0.1:8002", ttl_s=2).start()
        await until(lambda: len(pool.instances) == 1, timeout=15.0)
        dying.kill()
        took = await until(lambda: pool.instances == [], timeout=5.0)
        assert took <= 2.0 + 0.5
    finally:
        await bus.close()


@pytest.mark.nats
@pytest.mark.slow
async def test_nats_restart_keeps_announcements_flowing(
    tmp_path: Path, discovered: Discover
) -> None:
    server = NatsServer(tmp_path).start()
    bus = await connected(server.url)
    try:
        pool, _ = discovered(bus)
        async with announce(server.url, "orders", "http://127.0.0.1:8001", 3):
            await until(lambda: len(pool.instances) == 1, timeout=2.0)
            server.stop()
            server.start()  # same port, same JetStream store
            # Heartbeats resume after the reconnect; the instance stays or comes back.
            await asyncio.sleep(4.0)
            assert [i.url for i in pool.instances] == ["http://127.0.0.1:8001"]
            async with announce(server.url, "orders", "http://127.0.0.1:8002", 3):
                await until(lambda: len(pool.instances) == 2, timeout=5.0)
    finally:
        await bus.close()
        server.stop()
