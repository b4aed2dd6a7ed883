"""Bridge replicas share endpoints (one watched key-value bucket) and split the
deliveries; `relaygate up` runs a bridge when `bridge.enabled` is set."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.bridge.support import Bridge, Publisher, Receiver, eventually, unique_prefix
from tests.support.gateway import running_up
from tests.support.processes import NatsServer, free_port

pytestmark = [pytest.mark.nats, pytest.mark.e2e]


async def test_replicas_share_endpoints_and_see_each_others_changes(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    prefix = unique_prefix()
    one = Bridge(tmp_path, "one", nats_server.url, prefix).start()
    two = Bridge(tmp_path, "two", nats_server.url, prefix).start()
    receiver = await Receiver().start()
    publisher = await Publisher(nats_server.url, prefix).connect()
    try:
        one.wait_ready()
        two.wait_ready()
        created = one.register(receiver.url)
        receiver.secrets = [created["secret"]]
        assert [e["id"] for e in two.api("GET", "/endpoints").json()] == [created["id"]]
        first = [await publisher.publish("order.created") for _ in range(10)]
        await eventually(lambda: set(receiver.ids()) == set(first), what="first events")

        # Paused through replica two: replica one stops delivering too (it watches).
        assert two.api("POST", f"/endpoints/{created['id']}/pause").status_code == 200
        await asyncio.sleep(0.5)
        held = [await publisher.publish("order.created") for _ in range(5)]
        await asyncio.sleep(1.0)
        assert not set(held) & set(receiver.ids())

        assert one.api("POST", f"/endpoints/{created['id']}/resume").status_code == 200
        await eventually(lambda: set(held) <= set(receiver.ids()), what="held events")
        assert receiver.unverified == []
    finally:
        await publisher.close()
        await receiver.stop()
        one.stop()
        two.stop()


def test_relaygate_up_runs_the_bridge_when_enabled(tmp_path: Path) -> None:
    port = free_port()
    config = {"bridge": {"enabled": True, "port": port}}
    with running_up(tmp_path, "up", config) as gateway:
        assert f"bridge   http://127.0.0.1:{port}" in gateway.log()
        bridge = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{bridge}/readyz", timeout=5).status_code == 200
        created = httpx.post(
            f"{bridge}/endpoints", json={"url": "https://93.184.215.14/hook"}, timeout=5
        )
        assert created.status_code == 201, created.text
        refused = httpx.post(
            f"{bridge}/endpoints", json={"url": f"http://127.0.0.1:{port}/"}, timeout=5
        )
        assert refused.status_code == 422
