"""The ingress data plane over the in-memory bus: routing, errors, correlation, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.config import Config
from contracts.topics import Topics
from ingress.app import IngressApp
from workers.echo import echo
from workers.sdk import Request, Response, Worker

ROUTES: dict[str, Any] = {
    "routes": [
        {
            "name": "echo",
            "when": {"path": "/echo/{rest:path}"},
            "to": {"type": "worker", "topic": "echo"},
            "max_body_bytes": 64,
        },
        {
            "name": "item",
            "when": {"path": "/items/{id:int}", "methods": ["GET", "PUT"]},
            "to": {"type": "worker", "topic": "echo"},
        },
        {
            "name": "hosted",
            "when": {"path": "/h", "host": "*.example.com"},
            "to": {"type": "worker", "topic": "echo"},
        },
        {
            "name": "slow",
            "when": {"path": "/slow"},
            "to": {"type": "worker", "topic": "slow"},
            "timeout_ms": 100,
        },
        {"name": "boom", "when": {"path": "/boom"}, "to": {"type": "worker", "topic": "boom"}},
        {
            "name": "nobody",
            "when": {"path": "/nobody"},
            "to": {"type": "worker", "topic": "nobody"},
        },
    ],
}


async def _slow(request: Request) -> Response:
    await asyncio.sleep(0.3)
    return Response.text("late")


async def _boom(request: Request) -> Response:
    raise RuntimeError("bug")


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[httpx.AsyncClient, IngressApp]]:
    hub = MemoryHub()
    config = Config(**ROUTES, ingress={"max_pending": 4})
    ingress_bus = MemoryBus(topics=Topics(), node_id="ingress-1", hub=hub, max_pending=4)
    worker_bus = MemoryBus(topics=Topics(), node_id="worker-1", hub=hub)
    await ingress_bus.connect()
    await worker_bus.connect()
    for topic, handler in (("echo", echo), ("slow", _slow), ("boom", _boom)):
        worker = Worker(topic)
        worker.handler(handler)
        await worker.serve(worker_bus)
    app = IngressApp(config, ingress_bus)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        yield client, app
    await ingress_bus.close()
    await worker_bus.close()


async def test_request_reaches_the_worker_and_its_reply_comes_back(gateway: Any) -> None:
    client, _ = gateway
    response = await client.post(
        "/echo/a%2Fb?x=1&x=2", content=b"hi", headers=[("x-rep", "1"), ("x-rep", "2")]
    )
    assert response.status_code == 200
    body = response.json()
    assert body["route"] == "echo"
    assert body["path"] == "/echo/a%2Fb"
    assert body["query"] == "x=1&x=2"
    assert body["params"] == {"rest": "a%2Fb"}
    assert body["body"] == "hi"
    assert [h for h in body["headers"] if h[0] == "x-rep"] == [["x-rep", "1"], ["x-rep", "2"]]
    assert body["client"] == "203.0.113.9:5555"
    assert response.headers["x-correlation-id"] == body["correlation_id"]


async def test_client_correlation_id_is_kept_and_a_bad_one_replaced(gateway: Any) -> None:
    client, _ = gateway
    kept = await client.get("/echo/x", headers={"x-correlation-id": "order-42_a"})
    assert kept.headers["x-correlation-id"] == "order-42_a"
    assert kept.json()["correlation_id"] == "order-42_a"
    replaced = await client.get("/echo/x", headers={"x-correlation-id": "has.dots and space"})
    assert replaced.headers["x-correlation-id"] != "has.dots and space"
    assert len(replaced.headers["x-correlation-id"]) == 24


async def test_traceparent_is_continued_or_started(gateway: Any) -> None:
    client, _ = gateway
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert (await client.get("/echo/t", headers={"traceparent": parent})).json()[
        "traceparent"
    ] == parent
    started = (await client.get("/echo/t")).json()["traceparent"]
    assert started.startswith("00-")
    assert len(started) == 55


async def test_unknown_path_is_404_problem(gateway: Any) -> None:
    client, _ = gateway
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/no-route")
    assert problem["correlation_id"] == response.headers["x-correlation-id"]


async def test_wrong_method_is_405_with_allow(gateway: Any) -> None:
    client, _ = gateway
    response = await client.delete("/items/7")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, PUT"
    assert (await client.get("/items/7")).json()["params"] == {"id": "7"}
    assert (await client.get("/items/seven")).status_code == 404


async def test_host_wildcard_matches_subdomains_only(gateway: Any) -> None:
    client, _ = gateway
    assert (await client.get("/h", headers={"host": "api.example.com:8080"})).status_code == 200
    assert (await client.get("/h", headers={"host": "example.org"})).status_code == 404


async def test_body_over_the_route_limit_is_413(gateway: Any) -> None:
    client, _ = gateway
    declared = await client.post("/echo/x", content=b"x" * 65)
    assert declared.status_code == 413
    assert declared.json()["type"].endswith("/body-too-large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 10

    streamed = await client.post("/echo/x", content=chunks())
    assert streamed.status_code == 413
    assert (await client.post("/echo/x", content=b"x" * 64)).status_code == 200


async def test_no_worker_is_503(gateway: Any) -> None:
    client, _ = gateway
    response = await client.get("/nobody")
    assert response.status_code == 503
    assert response.json()["type"].endswith("/no-worker")


async def test_slow_worker_is_504_and_its_late_reply_is_counted(gateway: Any) -> None:
    client, app = gateway
    response = await client.get("/slow")
    assert response.status_code == 504
    assert response.json()["type"].endswith("/deadline-exceeded")
    # The worker still finishes; its reply finds nobody waiting.
    await asyncio.sleep(0.35)
    assert app.bus.pending.late == 1
    assert len(app.bus.pending) == 0


async def test_worker_exception_is_a_500_problem_not_a_hang(gateway: Any) -> None:
    client, _ = gateway
    response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json()["type"].endswith("/worker-error")
    assert "RuntimeError" in response.json()["detail"]
    assert response.json()["correlation_id"] == response.headers["x-correlation-id"]


async def test_full_pending_map_sheds_with_503_and_retry_after(gateway: Any) -> None:
    client, app = gateway
    responses = await asyncio.gather(*(client.get("/slow") for _ in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [503, 503, 504, 504, 504, 504]
    shed = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in shed)
    assert all(r.json()["type"].endswith("/overloaded") for r in shed)
    assert app.stats.shed == 2


async def test_head_reply_has_no_body(gateway: Any) -> None:
    client, _ = gateway
    response = await client.head("/echo/x")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0
