"""Event intake end to end: `relaygate up` with the webhook bridge on its embedded NATS;
CloudEvents posted over HTTP reach a subscriber signed, a retried event id once, and an
invalid event is refused with the failing field named."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.bridge.support import Receiver, eventually
from tests.support.gateway import RelaygateUp, running_up
from tests.support.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

ORDER = {"order_id": "o-1", "amount": 1250, "currency": "EUR"}
BINARY = {
    "ce-id": "order-77",
    "ce-source": "/shop",
    "ce-type": "order.created",
    "ce-specversion": "1.0",
    "content-type": "application/json",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelaygateUp, str]]:
    bridge_port = free_port()
    config = {
        "events": {"types": {"order.created": {"schema_file": "order.created.json"}}},
        "bridge": {
            "enabled": True,
            "port": bridge_port,
            "retry_schedule_s": [0.0, 0.5],
            "allow_networks": ["127.0.0.0/8"],
        },
    }
    with running_up(tmp_path_factory.mktemp("events"), "up", config) as up:
        yield up, f"http://127.0.0.1:{bridge_port}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()


async def test_a_retried_event_reaches_the_subscriber_once(
    gateway: tuple[RelaygateUp, str], receiver: Receiver
) -> None:
    up, bridge = gateway
    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(
            f"{bridge}/endpoints", json={"url": receiver.url, "events": ["order.*"]}
        )
        assert created.status_code == 201, created.text
        receiver.secrets = [created.json()["secret"]]
        for _ in range(3):  # the producer retries: same source and id
            answer = await client.post(
                f"{up.url}/events/order.created", content=orjson.dumps(ORDER), headers=BINARY
            )
            assert answer.status_code == 202, answer.text
        structured = {
            "specversion": "1.0",
            "id": "order-78",
            "source": "/shop",
            "type": "order.created",
            "data": {**ORDER, "order_id": "o-2"},
        }
        answer = await client.post(
            f"{up.url}/events/order.created",
            content=orjson.dumps(structured),
            headers={"content-type": "application/cloudevents+json"},
        )
        assert answer.status_code == 202
    await eventually(lambda: len(receiver.received) >= 2, what="two webhooks")
    await asyncio.sleep(1.0)
    assert sorted(receiver.ids()) == ["order-77", "order-78"]
    assert receiver.unverified == []
    payloads = {r.webhook_id: r.payload for r in receiver.received}
    assert payloads["order-77"]["data"] == ORDER
    assert payloads["order-78"]["type"] == "order.created"


def test_an_invalid_event_is_refused_with_the_failing_field(
    gateway: tuple[RelaygateUp, str],
) -> None:
    up, _ = gateway
    answer = httpx.post(
        f"{up.url}/events/order.created",
        content=orjson.dumps({**ORDER, "currency": "euro", "extra": 1}),
        headers={**BINARY, "ce-id": "bad-1"},
        timeout=10,
    )
    assert answer.status_code == 422
    errors = answer.json()["errors"]
    assert {"pointer": "/currency", "message": "'euro' does not match '^[A-Z]{3}$'"} in errors
    assert any(e["pointer"] == "" and "'extra' was unexpected" in e["message"] for e in errors)
    assert httpx.post(f"{up.url}/events/nope", content=b"{}", timeout=10).status_code == 404


def test_check_reports_a_missing_schema_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "bad.yaml"
    config.write_text("events:\n  types:\n    a.b:\n      schema_file: missing/a.json\n")
    done = subprocess.run(
        [sys.executable, "-m", "deploy", "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "events.types.a.b.schema_file: missing/a.json not found" in done.stderr
