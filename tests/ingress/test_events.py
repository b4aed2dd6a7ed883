"""Event intake in-process over a real NATS server: CloudEvents structured and binary
mode, schema checks with precise errors, broker-side dedupe, policies."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import httpx
import orjson
import pytest

from contracts.bus import Bus, create_bus
from contracts.bus.streams import Delivered, durable
from contracts.codec import EnvelopeCodec
from contracts.config import Config, ConfigError
from contracts.envelope import Envelope, new_id
from contracts.events import find_schema
from contracts.topics import Topics
from ingress.app import IngressApp
from ingress.events import message_id
from ingress.server import data_plane_servers
from ingress.transport import Transport
from tests.support.processes import NatsServer, free_port

pytestmark = pytest.mark.nats

ORDER = {"order_id": "o-1", "amount": 1250, "currency": "EUR"}
INVOICE = {"invoice_id": "i-9", "amount": 99, "currency": "USD", "paid_at": 1764892800000}


@dataclass
class Intake:
    client: httpx.AsyncClient
    bus: Bus
    received: list[Envelope]


def _config(prefix: str, **extra: Any) -> Config:
    return Config(
        bus={"prefix": prefix},
        ingress={"port": free_port()},
        events={
            "types": {
                "order.created": {"schema_file": "order.created.json"},
                "invoice.paid": {"schema_file": "invoice.paid.avsc"},
                "ping": {"json_schema": {"type": "object", "required": ["n"]}},
            },
            **extra,
        },
    )


@asynccontextmanager
async def _client(app: IngressApp, config: Config, path: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app`: in-process over ASGI, or ("lane") over TCP to the data plane's
    uvicorn listener, where event intake takes the lane (ingress/event_lane.py)."""
    if path == "asgi":
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            yield client
        return
    servers = data_plane_servers(app, config, Transport(config.ingress))
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        while not all(server.started for server in servers):
            assert not any(task.done() for task in tasks), "the listener did not start"
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{config.ingress.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            yield client
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
    assert app.lane.served > 0, "no event took the lane"


@pytest.fixture(params=["asgi", "lane"])
async def intake(nats_server: NatsServer, request: pytest.FixtureRequest) -> AsyncIterator[Intake]:
    prefix = "e" + new_id()[:8]
    bus = create_bus(nats_server.url, node_id="ingress-e", topics=Topics(prefix))
    await bus.connect()
    config = _config(prefix)
    app = IngressApp(config, bus)
    received: list[Envelope] = []
    codec = EnvelopeCodec()

    async def take(message: Delivered) -> None:
        received.append(codec.decode(message.data))

    consumer = await durable(bus).consume(bus.topics.events(), "test-reader", take)
    async with _client(app, config, request.param) as client:
        yield Intake(client, bus, received)
    await consumer.delete()
    await app.aclose()
    await bus.close()


async def _until(condition: Any, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.02)


def _structured(event_id: str, data: Any, event_type: str = "order.created") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/shop/orders",
        "type": event_type,
        "time": "2026-12-04T22:00:00Z",
        "tenant": "acme",
        "data": data,
    }


async def test_structured_event_is_stored_with_its_attributes(intake: Intake) -> None:
    answer = await intake.client.post(
        "/events/order.created",
        content=orjson.dumps(_structured("ev-1", ORDER)),
        headers={"content-type": "application/cloudevents+json; charset=utf-8"},
    )
    assert answer.status_code == 202, answer.text
    await _until(lambda: len(intake.received) == 1)
    event = intake.received[0]
    assert (event.id, event.source, event.type, event.subject) == (
        "ev-1",
        "/shop/orders",
        "event.order.created",
        "order.created",
    )
    assert orjson.loads(event.data) == ORDER
    assert event.time == 1796421600000
    assert event.datacontenttype == "application/json"
    assert event.http is not None
    assert event.http.headers == [("ce-tenant", "acme")]


async def test_binary_event_is_stored_with_the_body_as_data(intake: Intake) -> None:
    body = orjson.dumps(ORDER)
    answer = await intake.client.post(
        "/events/order.created",
        content=body,
        headers={
            "ce-id": "ev-2",
            "ce-source": "/shop/orders",
            "ce-type": "order.created",
            "ce-specversion": "1.0",
            "content-type": "application/json",
        },
    )
    assert answer.status_code == 202, answer.text
    await _until(lambda: len(intake.received) == 1)
    assert intake.received[0].data == body
    assert intake.received[0].id == "ev-2"


async def test_invalid_data_is_422_with_pointer_and_message(intake: Intake) -> None:
    data = {**ORDER, "amount": "12.50", "items": [{"sku": "a", "quantity": 0}]}
    answer = await intake.client.post(
        "/events/order.created",
        content=orjson.dumps(_structured("ev-3", data)),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert answer.status_code == 422
    problem = answer.json()
    assert answer.headers["content-type"] == "application/problem+json"
    assert problem["type"].endswith("/invalid-event")
    errors = {e["pointer"]: e["message"] for e in problem["errors"]}
    assert errors == {
        "/amount": "'12.50' is not of type 'integer'",
        "/items/0/quantity": "0 is less than the minimum of 1",
    }
    assert "at /amount: '12.50' is not of type 'integer'" in problem["detail"]
    await asyncio.sleep(0.2)
    assert intake.received == []


async def test_avro_type_checks_json_data_and_binary_data(intake: Intake) -> None:
    ce = {"ce-id": "inv-1", "ce-source": "/billing", "ce-type": "invoice.paid"}
    ce["ce-specversion"] = "1.0"
    bad = await intake.client.post(
        "/events/invoice.paid",
        content=orjson.dumps({**INVOICE, "currency": "JPY"}),
        headers={**ce, "content-type": "application/json"},
    )
    assert bad.status_code == 422
    assert bad.json()["errors"] == [
        {"pointer": "/currency", "message": "'JPY' is not one of EUR, USD, GBP"}
    ]
    missing = await intake.client.post(
        "/events/invoice.paid",
        content=orjson.dumps({k: v for k, v in INVOICE.items() if k != "amount"}),
        headers={**ce, "content-type": "application/json"},
    )
    assert missing.json()["errors"][0]["pointer"] == "/amount"
    schema_path = find_schema(Path("invoice.paid.avsc"))
    assert schema_path is not None
    schema = fastavro.parse_schema(orjson.loads(schema_path.read_bytes()))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, INVOICE)
    good = await intake.client.post(
        "/events/invoice.paid",
        content=buffer.getvalue(),
        headers={**ce, "content-type": "application/avro"},
    )
    assert good.status_code == 202, good.text
    truncated = await intake.client.post(
        "/events/invoice.paid",
        content=buffer.getvalue()[:5],
        headers={**ce, "ce-id": "inv-2", "content-type": "application/avro"},
    )
    assert truncated.status_code == 422
    await _until(lambda: len(intake.received) == 1)
    assert intake.received[0].data == buffer.getvalue()


@pytest.mark.parametrize(
    ("headers", "body", "status", "says"),
    [
        ({"content-type": "application/json"}, b"{}", 400, "ce-id"),
        (
            {"ce-id": "x", "ce-source": "/s", "ce-type": "order.created"},
            orjson.dumps(ORDER),
            400,
            "ce-specversion is missing",
        ),
        (
            {"ce-id": "x", "ce-source": "/s", "ce-type": "ping", "ce-specversion": "1.0"},
            orjson.dumps(ORDER),
            400,
            "differs from the type in the path",
        ),
        (
            {"ce-id": "x", "ce-source": "/s", "ce-type": "order.created", "ce-specversion": "0.3"},
            orjson.dumps(ORDER),
            400,
            "not supported",
        ),
        ({"content-type": "application/cloudevents+json"}, b"{not json", 400, "not JSON"),
        (
            {"content-type": "application/cloudevents-batch+json"},
            b"[]",
            415,
            "not taken",
        ),
    ],
)
async def test_malformed_events_are_refused_precisely(
    intake: Intake, headers: dict[str, str], body: bytes, status: int, says: str
) -> None:
    answer = await intake.client.post("/events/order.created", content=body, headers=headers)
    assert answer.status_code == status
    assert says in answer.json()["detail"]


async def test_unknown_type_is_404_and_get_is_405(intake: Intake) -> None:
    unknown = await intake.client.post("/events/nope", content=b"{}")
    assert unknown.status_code == 404
    assert unknown.json()["type"].endswith("/unknown-event-type")
    assert (await intake.client.get("/events/ping")).status_code == 405


async def test_same_source_and_id_is_stored_once(intake: Intake) -> None:
    event = orjson.dumps(_structured("dup-1", {"n": 1}, "ping"))
    headers = {"content-type": "application/cloudevents+json"}
    for _ in range(3):
        answer = await intake.client.post("/events/ping", content=event, headers=headers)
        assert answer.status_code == 202
    other_source = orjson.dumps({**_structured("dup-1", {"n": 1}, "ping"), "source": "/b"})
    await intake.client.post("/events/ping", content=other_source, headers=headers)
    await _until(lambda: len(intake.received) == 2)
    await asyncio.sleep(0.3)
    assert sorted(e.source for e in intake.received) == ["/b", "/shop/orders"]
    assert message_id("/a", "1") != message_id("/b", "1")


@pytest.mark.parametrize("path", ["asgi", "lane"])
async def test_intake_runs_its_policies(nats_server: NatsServer, path: str) -> None:
    prefix = "e" + new_id()[:8]
    bus = create_bus(nats_server.url, node_id="ingress-p", topics=Topics(prefix))
    await bus.connect()
    # The ASGI client comes from 203.0.113.9, the TCP one from loopback.
    denied = "203.0.113.0/24" if path == "asgi" else "127.0.0.0/8"
    config = _config(prefix, policies=[{"type": "ip_rules", "deny": [denied]}])
    app = IngressApp(config, bus)
    try:
        async with _client(app, config, path) as client:
            answer = await client.post(
                "/events/ping",
                content=orjson.dumps(_structured("p-1", {"n": 1}, "ping")),
                headers={"content-type": "application/cloudevents+json"},
            )
            assert answer.status_code == 403
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["correlation_id"] == answer.headers["x-correlation-id"]
    finally:
        await app.aclose()
        await bus.close()


def test_a_missing_schema_file_stops_the_node_with_its_path() -> None:
    config = Config(
        bus={"url": "memory://"},
        events={"types": {"a": {"schema_file": "nowhere/a.json"}}},
    )
    from contracts.bus.memory import MemoryBus

    with pytest.raises(ConfigError) as caught:
        IngressApp(config, MemoryBus(topics=Topics(), node_id="n"))
    assert caught.value.problems[0].startswith("events.types.a.schema_file: nowhere/a.json")
