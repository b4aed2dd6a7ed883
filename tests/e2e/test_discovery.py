"""`relaygate up` routing to upstreams it discovers while running: instances registered
in etcd, or announced on the gateway's own (embedded NATS) bus by `relaygate announce`,
receive the traffic sent through the gateway and show in the admin API's /upstreams;
when they leave, the route answers 503 upstream-no-healthy-instance."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_resilience import shop_state
from tests.support.etcd import EtcdServer
from tests.support.gateway import RelaygateUp, relaygate_argv, relaygate_env, running_up
from tests.support.processes import ManagedProcess, free_port
from tests.support.reflector import Reflector

pytestmark = [pytest.mark.e2e, pytest.mark.nats]


def route(discovery: dict[str, Any], **bus: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "routes": [
            {
                "name": "shop",
                "when": {"path": "/shop/{rest:path}"},
                "to": {"type": "upstream", "upstream": "shop"},
            }
        ],
        "upstreams": {"shop": {"discovery": discovery, "retries": {"attempts": 1}}},
    }
    if bus:
        config["bus"] = bus
    return config


def instance_urls(gateway: RelaygateUp) -> list[str] | None:
    state = shop_state(gateway)
    return None if state is None else [i["url"] for i in state["instances"]]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - start


def served_by(gateway: RelaygateUp) -> int | None:
    response = httpx.get(f"{gateway.url}/shop/item", timeout=10.0)
    if response.status_code != 200:
        return None
    return int(dict(response.json()["headers"])["host"].rsplit(":", 1)[1])


def no_instance(gateway: RelaygateUp) -> bool:
    response = httpx.get(f"{gateway.url}/shop/item", timeout=10.0)
    return response.status_code == 503 and "no-healthy-instance" in response.text


@pytest.mark.etcd
def test_instances_registered_in_etcd_are_proxied_to_and_shown(tmp_path: Path) -> None:
    etcd = EtcdServer(tmp_path).start()
    upstream = Reflector(tmp_path).start()
    try:
        config = route({"type": "etcd", "endpoints": [etcd.url]})
        with running_up(tmp_path, "up", config) as gateway:
            assert no_instance(gateway)  # nothing registered yet: a precise 503
            etcd.put("/relaygate/services/shop/one", {"url": upstream.url})
            wait_for(lambda: served_by(gateway) == upstream.port, 2.0, "etcd instance routed")

            # The admin API shows it with the next state update (every second).
            wait_for(lambda: instance_urls(gateway) == [upstream.url], 3.0, "admin state")
            state = shop_state(gateway)
            assert state is not None
            assert state["discovery"]["type"] == "etcd"
            assert state["discovery"]["error"] is None

            etcd.delete("/relaygate/services/shop/one")
            wait_for(lambda: no_instance(gateway), 2.0, "deregistered instance gone")
    finally:
        upstream.stop()
        etcd.stop()


def test_instances_announced_on_the_gateways_bus_are_proxied_to(tmp_path: Path) -> None:
    nats_port = free_port()
    bus_url = f"nats://127.0.0.1:{nats_port}"
    upstream = Reflector(tmp_path).start()
    config = route({"type": "bus", "ttl_s": 3}, embedded={"port": nats_port})
    try:
        with running_up(tmp_path, "up", config) as gateway:
            announcer = ManagedProcess(
                relaygate_argv(
                    "announce",
                    "--bus",
                    bus_url,
                    "--service",
                    "shop",
                    "--url",
                    upstream.url,
                    "--ttl",
                    "3",
                ),
                tmp_path / "announce.log",
                env=relaygate_env(),
            ).start()
            try:
                wait_for(lambda: served_by(gateway) == upstream.port, 10.0, "announced, routed")
                wait_for(lambda: instance_urls(gateway) == [upstream.url], 3.0, "admin state")
            finally:
                announcer.stop()
            assert announcer.proc is not None
            assert announcer.proc.returncode == 0, announcer.log()
            wait_for(lambda: no_instance(gateway), 2.0, "goodbye on a clean stop")
    finally:
        upstream.stop()
