"""`relaygate up` in front of a primary and a backup upstream process: the primary is
killed and restarted; clients keep getting answers (retried, then failed over to the
backup, then back to the primary) and the admin API shows each instance's health."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import RelaygateUp, running_up
from tests.support.reflector import Reflector

pytestmark = [pytest.mark.e2e, pytest.mark.nats]


@pytest.fixture
def reflectors(tmp_path: Path) -> Iterator[Callable[..., Reflector]]:
    started: list[Reflector] = []

    def start(port: int | None = None) -> Reflector:
        reflector = Reflector(tmp_path, port).start()
        started.append(reflector)
        return reflector

    yield start
    for reflector in started:
        reflector.stop()


def served_by(gateway: RelaygateUp) -> int:
    response = httpx.get(f"{gateway.url}/shop/item", timeout=10.0)
    assert response.status_code == 200, response.text
    host = dict(response.json()["headers"])["host"]
    return int(host.rsplit(":", 1)[1])


def shop_state(gateway: RelaygateUp) -> dict[str, Any] | None:
    workers = httpx.get(f"{gateway.admin_url}/upstreams", timeout=10.0).json()["workers"]
    if not workers:
        return None
    state: dict[str, Any] = workers[0]["upstreams"]["shop"]
    return state


def wait_state(
    gateway: RelaygateUp, condition: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = shop_state(gateway)
        if state is not None and condition(state):
            return state
        assert time.monotonic() < deadline, f"admin state not reached; last: {state}"
        time.sleep(0.05)


def test_killed_primary_fails_over_to_the_backup_and_traffic_returns_after_restart(
    tmp_path: Path, reflectors: Callable[..., Reflector]
) -> None:
    primary, backup = reflectors(), reflectors()
    config = {
        "routes": [
            {
                "name": "shop",
                "when": {"path": "/shop/{rest:path}"},
                "to": {"type": "upstream", "upstream": "shop"},
            }
        ],
        "upstreams": {
            "shop": {
                "targets": [{"url": primary.url}, {"url": backup.url, "group": 1}],
                "health": {"path": "/healthz", "interval_ms": 50, "timeout_ms": 500},
                "retries": {"attempts": 2, "budget_ratio": 1.0},
            }
        },
    }
    with running_up(tmp_path / "up", "up", config) as gateway:
        assert {served_by(gateway) for _ in range(3)} == {primary.port}
        state = wait_state(gateway, lambda s: s["instances"][0]["available"])
        assert state["breaker"]["state"] == "closed"
        assert [(i["url"], i["group"]) for i in state["instances"]] == [
            (primary.url, 0),
            (backup.url, 1),
        ]

        primary.kill()
        assert served_by(gateway) == backup.port  # retried on the backup at once
        state = wait_state(gateway, lambda s: not s["instances"][0]["healthy"])
        assert state["instances"][1]["available"] is True
        assert {served_by(gateway) for _ in range(3)} == {backup.port}

        reflectors(port=primary.port)
        wait_state(gateway, lambda s: s["instances"][0]["available"])
        assert {served_by(gateway) for _ in range(3)} == {primary.port}
