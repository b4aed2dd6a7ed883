"""`relaygate up` with no config: the built-in demo, its ports set through the environment."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway import RelaygateUp, running_up

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelaygateUp]:
    with running_up(tmp_path_factory.mktemp("demo"), "demo", None) as gateway:
        yield gateway


async def test_demo_echo_round_trip_gets_a_correlation_id(demo: RelaygateUp) -> None:
    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.post(
            "/demo/echo/hello/world?x=1&x=2",
            content=b"hi there",
            headers={"x-test": "e2e", "content-type": "text/plain"},
        )

    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["route"] == "demo-echo"
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/demo/echo/hello/world"
    assert echoed["query"] == "x=1&x=2"
    assert echoed["params"] == {"path": "hello/world"}
    assert echoed["body"] == "hi there"
    assert ["x-test", "e2e"] in echoed["headers"]
    assert echoed["client"].startswith("127.0.0.1:")
    assert TRACEPARENT.match(echoed["traceparent"]), echoed["traceparent"]
    correlation_id = response.headers.get("x-correlation-id")
    assert correlation_id, response.headers
    assert echoed["correlation_id"] == correlation_id


async def test_demo_echo_keeps_the_clients_correlation_id(demo: RelaygateUp) -> None:
    mine = f"e2e-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=demo.url) as client:
        kept = await client.get("/demo/echo/keep", headers={"x-correlation-id": mine})
        first = await client.get("/demo/echo/new")
        second = await client.get("/demo/echo/new")

    assert kept.status_code == 200, kept.text
    assert kept.headers["x-correlation-id"] == mine
    assert kept.json()["correlation_id"] == mine
    # Without one, each request gets its own.
    assert first.headers["x-correlation-id"] != second.headers["x-correlation-id"]


async def test_demo_upstream_answers_with_the_status_asked_for(demo: RelaygateUp) -> None:
    async with httpx.AsyncClient(base_url=demo.url, timeout=30.0) as client:
        created = await client.get("/demo/upstream/status/201")
        described = await client.get("/demo/upstream/anything?q=1")

    assert created.status_code == 201, created.text
    assert described.status_code == 200, described.text
    assert described.json()["path"] == "/anything"
    assert described.json()["query"] == "q=1"
    assert described.headers.get("x-correlation-id")
