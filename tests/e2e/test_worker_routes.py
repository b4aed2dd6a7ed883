"""`relaygate up` with routes to workers: the echo round trip, and the errors the
ingress answers itself: 504 past the deadline, 503 with no worker, 413 past the
body limit. Run on both buses where the bus matters."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import BUSES, bus_section
from tests.support.gateway import RelaygateUp, admin_stats, running_up, wait_routed
from tests.support.http_assertions import assert_problem
from tests.support.processes import kafka_bus_url

pytestmark = pytest.mark.e2e

SLOW_TIMEOUT_MS = 300
SMALL_LIMIT = 1024

SLOW_WORKER = '''\
"""A team's worker for the e2e tests: answers after ?ms=N milliseconds."""

import asyncio
from urllib.parse import parse_qs

from workers.sdk import Request, Response, Worker

worker = Worker("slow")


@worker.handler
async def handle(request: Request) -> Response:
    ms = int(parse_qs(request.query).get("ms", ["0"])[0])
    await asyncio.sleep(ms / 1000)
    return Response.json({"slept_ms": ms, "correlation_id": request.correlation_id})
'''


def _config(bus: dict[str, Any]) -> dict[str, Any]:
    def route(name: str, topic: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "when": {"path": f"/{name}/{{rest:path}}"},
            "to": {"type": "worker", "topic": topic},
            **extra,
        }

    return {
        "bus": bus,
        "routes": [
            route("echo", "echo", timeout_ms=10_000),
            route("small", "echo", timeout_ms=10_000, max_body_bytes=SMALL_LIMIT),
            route("slow", "slow", timeout_ms=SLOW_TIMEOUT_MS),
            route("nobody", "nobody", timeout_ms=5_000),
        ],
        "workers": [
            {"type": "echo", "topics": ["echo"]},
            {"type": "module", "target": "e2e_slow_worker:worker"},
        ],
    }


def _start(request: pytest.FixtureRequest, bus: str) -> Iterator[RelaygateUp]:
    workdir = request.getfixturevalue("tmp_path_factory").mktemp(f"worker-routes-{bus}")
    modules = workdir / "modules"
    modules.mkdir()
    (modules / "e2e_slow_worker.py").write_text(SLOW_WORKER)
    config = _config(bus_section(request, bus))
    with running_up(workdir, f"up-{bus}", config, python_path=[modules]) as gateway:
        if bus == "kafka":
            wait_routed(f"{gateway.url}/echo/warm-up")
            wait_routed(f"{gateway.url}/slow/warm-up?ms=0")
        yield gateway


@pytest.fixture(scope="module")
def nats_gateway(request: pytest.FixtureRequest) -> Iterator[RelaygateUp]:
    yield from _start(request, "nats")


@pytest.fixture(scope="module")
def kafka_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker of this module's own (KAFKA_BOOTSTRAP_SERVERS still wins): on the
    session's broker, the group `workers.echo` carries the members of earlier modules'
    echo workers, some killed, and Tansu then kept sending this module's new echo
    worker back to rejoin until its start timed out (in about one CI run of six, and
    twice in a row on 2026-12-05)."""
    yield from kafka_bus_url(tmp_path_factory.mktemp("worker-routes-tansu"))


@pytest.fixture(scope="module")
def kafka_gateway(request: pytest.FixtureRequest) -> Iterator[RelaygateUp]:
    yield from _start(request, "kafka")


@pytest.fixture(params=BUSES)
def gateway(request: pytest.FixtureRequest) -> RelaygateUp:
    up: RelaygateUp = request.getfixturevalue(f"{request.param}_gateway")
    return up


@pytest.fixture
async def client(gateway: RelaygateUp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30.0) as c:
        yield c


@pytest.fixture
async def nats_client(nats_gateway: RelaygateUp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=nats_gateway.url, timeout=30.0) as c:
        yield c


async def test_echo_round_trip_with_correlation_id(client: httpx.AsyncClient) -> None:
    marker = uuid.uuid4().hex
    response = await client.put(
        f"/echo/items/{marker}?a=1&a=2", content=marker.encode(), headers={"x-marker": marker}
    )

    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["route"] == "echo"
    assert echoed["method"] == "PUT"
    assert echoed["path"] == f"/echo/items/{marker}"
    assert echoed["query"] == "a=1&a=2"
    assert echoed["params"] == {"rest": f"items/{marker}"}
    assert echoed["body"] == marker
    assert ["x-marker", marker] in echoed["headers"]
    assert echoed["correlation_id"] == response.headers["x-correlation-id"]


async def test_slow_worker_is_a_504_problem_and_its_late_reply_is_counted(
    gateway: RelaygateUp, client: httpx.AsyncClient
) -> None:
    fast = await client.get("/slow/x?ms=0")
    assert fast.status_code == 200, fast.text
    late_before = admin_stats(gateway.admin_url)["late_replies"]

    started = time.monotonic()
    response = await client.get("/slow/x?ms=900")
    elapsed = time.monotonic() - started

    body = assert_problem(response, 504, "deadline-exceeded")
    assert body["instance"] == "/slow/x"
    assert SLOW_TIMEOUT_MS / 1000 - 0.05 <= elapsed < SLOW_TIMEOUT_MS / 1000 + 0.5, elapsed
    # The worker answers at ~900 ms; the ingress drops that reply and counts it.
    deadline = time.monotonic() + 5.0
    stats = admin_stats(gateway.admin_url)
    while stats["late_replies"] <= late_before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        stats = admin_stats(gateway.admin_url)
    assert stats["late_replies"] > late_before, stats
    assert stats["pending"] == 0, stats
    # Nothing broke: the same worker still answers in time.
    again = await client.get("/slow/x?ms=0")
    assert again.status_code == 200, again.text


async def test_a_module_workers_replies_in_time_are_not_counted_as_late(
    gateway: RelaygateUp, client: httpx.AsyncClient
) -> None:
    late_before = admin_stats(gateway.admin_url)["late_replies"]
    for _ in range(3):
        response = await client.get("/slow/x?ms=0")
        assert response.status_code == 200, response.text
    await asyncio.sleep(0.5)  # time for any second reply to arrive

    stats = admin_stats(gateway.admin_url)
    assert stats["late_replies"] == late_before, (
        f"{stats['late_replies'] - late_before} late replies for 3 requests answered in time: "
        "a second (empty) reply arrives for each"
    )


@pytest.mark.nats
async def test_no_worker_is_a_503_problem_within_100_ms(nats_client: httpx.AsyncClient) -> None:
    # The connection is open before timing starts: what is measured is the gateway.
    assert (await nats_client.get("/no-such-route")).status_code == 404
    latencies = []
    for attempt in range(5):
        started = time.monotonic()
        response = await nats_client.get(f"/nobody/{attempt}")
        latencies.append(time.monotonic() - started)
        assert_problem(response, 503, "no-worker")

    assert max(latencies) < 0.1, [f"{s * 1000:.1f} ms" for s in latencies]


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def _content(body: bytes, framing: str) -> dict[str, Any]:
    if framing == "content-length":
        return {"content": body}
    return {"content": _chunks(body, 400)}


@pytest.mark.nats
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_above_the_route_limit_is_a_413_problem(
    nats_client: httpx.AsyncClient, framing: str
) -> None:
    response = await nats_client.post(
        "/small/upload", **_content(b"x" * (SMALL_LIMIT + 1), framing)
    )

    if framing == "chunked":
        assert response.request.headers.get("transfer-encoding") == "chunked"
    body = assert_problem(response, 413, "body-too-large")
    assert str(SMALL_LIMIT) in body["detail"]


@pytest.mark.nats
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_at_the_route_limit_passes(nats_client: httpx.AsyncClient, framing: str) -> None:
    payload = bytes(range(97, 123)) * (SMALL_LIMIT // 26) + b"z" * (SMALL_LIMIT % 26)
    response = await nats_client.post("/small/upload", **_content(payload, framing))

    assert response.status_code == 200, response.text
    assert response.json()["body"] == payload.decode()
