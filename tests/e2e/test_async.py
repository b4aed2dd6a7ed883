"""Async requests and events as a user runs them: `relaygate ingress`, `worker echo` and
`worker async` as subprocesses (and `relaygate up`). What got a 202 survives a SIGKILL
and restart of the NATS server (JetStream on disk) or of the async runner on Kafka: every
request gets its result, every event is in the stream once."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from contracts.bus import create_bus
from contracts.bus.nats import NatsBus, stream_name
from contracts.bus.streams import Delivered, durable
from contracts.codec import EnvelopeCodec
from contracts.topics import Topics
from tests.support.gateway import (
    IngressNode,
    RelaygateRole,
    running_up,
    stop_all,
    wait_until,
    write_config,
)
from tests.support.processes import NatsServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROUTES = [
    {
        "name": "jobs",
        "when": {"path": "/jobs/{rest:path}"},
        "to": {"type": "worker", "topic": "echo"},
        "mode": "async",
        "timeout_ms": 2000,
    }
]
EVENTS = {"types": {"order.created": {"schema_file": "order.created.json"}}}
ORDER = {"order_id": "o-1", "amount": 1250, "currency": "EUR"}


def _event(i: int) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"ev-{i}",
            "source": "/shop",
            "type": "order.created",
            "data": {**ORDER, "order_id": f"o-{i}"},
        }
    )


class Roles:
    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config_file = write_config(workdir / "config.yaml", config)
        self.started: list[RelaygateRole] = []

    def start(self, name: str, *role: str) -> RelaygateRole:
        process = RelaygateRole(self.workdir, name, self.config_file, list(role)).start()
        self.started.append(process)
        return process.wait_ready()

    def ingress(self, name: str) -> IngressNode:
        node = IngressNode(self.workdir, name, self.config_file)
        node.start()
        self.started.append(node)
        node.wait_ready()
        return node


async def _results(client: httpx.AsyncClient, locations: list[str]) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(client.get(loc, headers={"prefer": "wait=20"}, timeout=30) for loc in locations)
        )
    )


async def _stream_count(url: str, prefix: str, topic: str) -> int:
    bus = create_bus(url, node_id="counter", topics=Topics(prefix))
    await bus.connect()
    try:
        assert isinstance(bus, NatsBus)
        info = await bus.jetstream().stream_info(stream_name(topic))
        return int(info.state.messages)
    finally:
        await bus.close()


@pytest.mark.nats
async def test_accepted_requests_and_events_survive_a_nats_kill(tmp_path: Path) -> None:
    nats = NatsServer(tmp_path).start()
    prefix = "a" + uuid.uuid4().hex[:6]
    roles = Roles(
        tmp_path,
        {
            "bus": {"url": nats.url, "prefix": prefix},
            "routes": ROUTES,
            "events": EVENTS,
            "async_requests": {"max_wait_s": 20},
        },
    )
    try:
        roles.start("echo", "worker", "echo")
        node = roles.ingress("ingress")
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            # Accepted while no runner runs: they wait on the stream.
            accepted = [
                await client.post(f"/jobs/{i}", content=f"job-{i}".encode()) for i in range(20)
            ]
            assert [a.status_code for a in accepted] == [202] * 20
            events = [
                await client.post(
                    "/events/order.created",
                    content=_event(i),
                    headers={"content-type": "application/cloudevents+json"},
                )
                for i in range(10)
            ]
            assert [e.status_code for e in events] == [202] * 10

            nats.signal(signal.SIGKILL)
            nats.proc.wait()  # type: ignore[union-attr]
            nats = NatsServer(tmp_path, port=nats.port).start()  # the same store on disk

            # The ingress reconnects; a producer retrying events is deduplicated.
            def retried() -> bool:
                try:
                    answer = httpx.post(
                        f"{node.url}/events/order.created",
                        content=_event(3),
                        headers={"content-type": "application/cloudevents+json"},
                        timeout=5,
                    )
                except httpx.HTTPError:
                    return False
                return answer.status_code == 202

            wait_until(retried, 30, "event intake after the NATS restart", node)
            runner = roles.start("runner", "worker", "async")
            answers = await _results(client, [a.headers["location"] for a in accepted])
            assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers]
            assert [a.json()["body"] for a in answers] == [f"job-{i}" for i in range(20)]
            assert runner.alive()
        assert await _stream_count(nats.url, prefix, f"{prefix}.async") == 20
        assert await _stream_count(nats.url, prefix, f"{prefix}.events") == 10
    finally:
        stop_all(list(reversed(roles.started)))
        nats.stop()


@pytest.mark.nats
def test_relaygate_up_starts_the_async_runner_for_async_routes(tmp_path: Path) -> None:
    config = {"routes": ROUTES, "workers": [{"type": "echo"}]}
    with running_up(tmp_path, "up", config) as gateway:
        assert "worker   async x1" in gateway.log()
        accepted = httpx.post(f"{gateway.url}/jobs/x", content=b"via-up", timeout=10)
        assert accepted.status_code == 202
        location = accepted.headers["location"]
        result = httpx.get(gateway.url + location, headers={"prefer": "wait=10"}, timeout=15)
        assert result.status_code == 200
        assert result.json()["body"] == "via-up"


@pytest.mark.kafka
@pytest.mark.redis
async def test_async_requests_survive_a_runner_restart_on_kafka(
    tmp_path: Path, kafka_url: str, redis_server: Any
) -> None:
    prefix = "k" + uuid.uuid4().hex[:6]
    roles = Roles(
        tmp_path,
        {
            "bus": {"url": kafka_url, "prefix": prefix},
            "state": {"url": redis_server.url},
            "routes": ROUTES,
            "async_requests": {"max_wait_s": 30, "max_attempts": 20},
            "idempotency": {"enabled": True},
            "events": EVENTS,
        },
    )
    try:
        roles.start("echo", "worker", "echo")
        runner = roles.start("runner", "worker", "async")
        node = roles.ingress("ingress")
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            first = await client.post("/jobs/warm", content=b"warm")
            assert first.status_code == 202
            warm = await client.get(first.headers["location"], headers={"prefer": "wait=30"})
            assert warm.status_code == 200, warm.text  # the runner's group has joined
            runner.kill()
            accepted = [
                await client.post(
                    f"/jobs/{i}", content=f"job-{i}".encode(), headers={"idempotency-key": f"k{i}"}
                )
                for i in range(10)
            ]
            assert [a.status_code for a in accepted] == [202] * 10
            again = await client.post(
                "/jobs/3", content=b"job-3", headers={"idempotency-key": "k3"}
            )
            assert again.headers["location"] == accepted[3].headers["location"]
            pending = await client.get(accepted[0].headers["location"])
            assert pending.status_code == 202
            roles.start("runner-2", "worker", "async")
            answers = await _results(client, [a.headers["location"] for a in accepted])
            assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
            assert [a.json()["body"] for a in answers] == [f"job-{i}" for i in range(10)]
            for i in range(5):
                event = await client.post(
                    "/events/order.created",
                    content=_event(i),
                    headers={"content-type": "application/cloudevents+json"},
                )
                assert event.status_code == 202, event.text
        # Acknowledged by Kafka before the 202: a consumer that starts now reads them all.
        bus = create_bus(kafka_url, node_id="reader", topics=Topics(prefix))
        await bus.connect()
        seen: list[str] = []
        codec = EnvelopeCodec()

        async def take(message: Delivered) -> None:
            seen.append(codec.decode(message.data).id)

        consumer = await durable(bus).consume(bus.topics.events(), "reader", take)
        try:
            for _ in range(300):
                if len(seen) >= 5:
                    break
                await asyncio.sleep(0.1)
            assert sorted(seen) == [f"ev-{i}" for i in range(5)]
        finally:
            await consumer.delete()
            await bus.close()
    finally:
        stop_all(list(reversed(roles.started)))
