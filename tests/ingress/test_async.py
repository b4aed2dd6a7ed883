"""Async requests and Idempotency-Key at the ingress, in-process over a real NATS server
(results in JetStream key-value) or Redis, with the real async runner and echo worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from contracts.asyncresults import open_results
from contracts.bus import Bus, create_bus
from contracts.config import Config
from contracts.envelope import new_id
from contracts.topics import Topics
from ingress.app import IngressApp
from tests.support.processes import NatsServer, RedisServer
from workers.async_runner import AsyncRunner
from workers.echo import echo
from workers.sdk import Request, Response, Worker

pytestmark = pytest.mark.nats


@dataclass
class Gateway:
    client: httpx.AsyncClient
    app: IngressApp
    config: Config
    runs: list[str]  # bodies the counting worker saw
    runner: AsyncRunner | None


def _config(prefix: str, extra: dict[str, Any]) -> Config:
    return Config(
        bus={"prefix": prefix},
        routes=[
            {
                "name": "jobs",
                "when": {"path": "/jobs/{rest:path}"},
                "to": {"type": "worker", "topic": "echo"},
                "mode": "async",
            },
            {
                "name": "count",
                "when": {"path": "/count"},
                "to": {"type": "worker", "topic": "count"},
                "timeout_ms": 2000,
            },
            {
                "name": "nobody",
                "when": {"path": "/nobody"},
                "to": {"type": "worker", "topic": "nobody"},
                "timeout_ms": 300,
                "mode": "async",
            },
        ],
        async_requests={"honor_prefer": True, "max_wait_s": 3, "max_attempts": 2},
        idempotency={"enabled": True},
        **extra,
    )


async def _bus(url: str, prefix: str, node: str) -> Bus:
    bus = create_bus(url, node_id=node, topics=Topics(prefix))
    await bus.connect()
    return bus


@pytest.fixture
async def gateway(
    nats_server: NatsServer, request: pytest.FixtureRequest
) -> AsyncIterator[Gateway]:
    extra: dict[str, Any] = getattr(request, "param", {})
    prefix = "t" + new_id()[:8]
    config = _config(prefix, extra)
    ingress_bus = await _bus(nats_server.url, prefix, "ingress-1")
    worker_bus = await _bus(nats_server.url, prefix, "worker-1")
    runs: list[str] = []

    async def count(req: Request) -> Response:
        runs.append(req.body.decode())
        return Response.json({"run": len(runs), "body": req.body.decode()}, status=201)

    for topic, handler in (("echo", echo), ("count", count)):
        worker = Worker(topic)
        worker.handler(handler)
        await worker.serve(worker_bus)
    app = IngressApp(config, ingress_bus)
    shared = app.policy_state.shared
    redis = shared.redis if shared is not None else None
    runner = AsyncRunner(config, worker_bus, await open_results(config, worker_bus, redis))
    await runner.start()
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        yield Gateway(client, app, config, runs, runner)
    await runner.stop()
    await app.aclose()
    await ingress_bus.close()
    await worker_bus.close()


async def test_results_and_keys_expire_with_their_ttl_in_jetstream(gateway: Gateway) -> None:
    from contracts.bus.nats import NatsBus

    await gateway.client.post("/jobs/ttl", content=b"t", headers={"idempotency-key": "t"})
    bus = gateway.app.bus
    assert isinstance(bus, NatsBus)
    js = bus.jetstream()
    prefix = gateway.config.bus.prefix
    results = await js.stream_info(f"KV_{prefix}_async_results")
    keys = await js.stream_info(f"KV_{prefix}_idempotency")
    assert results.config.max_age == 3600
    assert keys.config.max_age == 86_400
    assert str(results.config.storage) in ("file", "StorageType.FILE")


async def test_async_route_answers_202_with_location_then_the_result(gateway: Gateway) -> None:
    accepted = await gateway.client.post("/jobs/a?x=1", content=b"payload")
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["location"]
    assert location.startswith("/results/")
    assert "preference-applied" not in accepted.headers  # nobody asked
    assert accepted.json()["status"] == "pending"
    result = await gateway.client.get(location, headers={"prefer": "wait=5"})
    assert result.status_code == 200, result.text
    echoed = result.json()
    assert echoed["path"] == "/jobs/a"
    assert echoed["query"] == "x=1"
    assert echoed["body"] == "payload"
    again = await gateway.client.get(location)
    assert again.json() == echoed


async def test_prefer_respond_async_turns_a_sync_route_async(gateway: Gateway) -> None:
    accepted = await gateway.client.post(
        "/count", content=b"one", headers={"prefer": "respond-async"}
    )
    assert accepted.status_code == 202
    assert accepted.headers["preference-applied"] == "respond-async"
    result = await gateway.client.get(accepted.headers["location"], headers={"prefer": "wait=5"})
    assert result.status_code == 201
    assert result.json() == {"run": 1, "body": "one"}
    assert gateway.runs == ["one"]


async def test_pending_result_is_202_and_wait_is_capped(gateway: Gateway) -> None:
    assert gateway.runner is not None
    await gateway.runner.stop()  # nothing runs: the result stays pending
    accepted = await gateway.client.post("/jobs/p", content=b"x")
    location = accepted.headers["location"]
    pending = await gateway.client.get(location)
    assert pending.status_code == 202
    assert pending.headers["retry-after"] == "1"
    assert pending.headers["location"] == location
    started = asyncio.get_running_loop().time()
    held = await gateway.client.get(location, headers={"prefer": "wait=30"})
    waited = asyncio.get_running_loop().time() - started
    assert held.status_code == 202
    assert 2.8 <= waited < 6, f"held {waited:.1f}s; max_wait_s is 3"


async def test_wait_is_woken_by_the_result_not_by_polling(gateway: Gateway) -> None:
    assert gateway.runner is not None
    await gateway.runner.stop()
    accepted = await gateway.client.post("/jobs/w", content=b"w")
    location = accepted.headers["location"]
    waiting = asyncio.ensure_future(gateway.client.get(location, headers={"prefer": "wait=3"}))
    await asyncio.sleep(0.3)
    await gateway.runner.start()
    started = asyncio.get_running_loop().time()
    result = await waiting
    assert result.status_code == 200
    assert asyncio.get_running_loop().time() - started < 2.5


async def test_unknown_or_malformed_result_id_is_404_problem(gateway: Gateway) -> None:
    for path in ("/results/" + "0" * 24, "/results/nope"):
        missing = await gateway.client.get(path)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["type"].endswith("/result-unknown")
    assert (await gateway.client.post("/results/" + "0" * 24)).status_code == 405


async def test_worker_that_never_answers_gives_a_503_result(gateway: Gateway) -> None:
    accepted = await gateway.client.post("/nobody", content=b"")
    assert accepted.status_code == 202
    result = await gateway.client.get(accepted.headers["location"], headers={"prefer": "wait=3"})
    assert result.status_code == 503
    assert result.json()["type"].endswith("/no-worker")


async def test_same_idempotency_key_and_request_runs_once(gateway: Gateway) -> None:
    headers = {"idempotency-key": '"order-1"'}
    first = await gateway.client.post("/count", content=b"a", headers=headers)
    second = await gateway.client.post("/count", content=b"a", headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json() == {"run": 1, "body": "a"}
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert gateway.runs == ["a"]


async def test_same_idempotency_key_with_another_body_is_422(gateway: Gateway) -> None:
    headers = {"idempotency-key": "order-2"}
    assert (await gateway.client.post("/count", content=b"a", headers=headers)).status_code == 201
    refused = await gateway.client.post("/count", content=b"b", headers=headers)
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/idempotency-key-reused")
    assert gateway.runs == ["a"]


async def test_idempotency_key_on_async_request_gives_the_same_location(gateway: Gateway) -> None:
    headers = {"idempotency-key": "job-1"}
    first = await gateway.client.post("/jobs/k", content=b"k", headers=headers)
    second = await gateway.client.post("/jobs/k", content=b"k", headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.headers["location"] == second.headers["location"]
    assert second.headers["idempotent-replayed"] == "true"


async def test_concurrent_requests_with_one_key_run_once(gateway: Gateway) -> None:
    headers = {"idempotency-key": "race"}
    answers = await asyncio.gather(
        *(gateway.client.post("/count", content=b"r", headers=headers) for _ in range(5))
    )
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    assert gateway.runs == ["r"]


@pytest.mark.redis
async def test_results_and_keys_in_redis_when_state_url_is_set(
    nats_server: NatsServer, redis_server: RedisServer
) -> None:
    prefix = "t" + new_id()[:8]
    config = _config(prefix, {"state": {"url": redis_server.url}})
    ingress_bus = await _bus(nats_server.url, prefix, "ingress-r")
    worker_bus = await _bus(nats_server.url, prefix, "worker-r")
    worker = Worker("count")
    runs: list[bytes] = []

    async def count(req: Request) -> Response:
        runs.append(req.body)
        return Response.text("ok")

    worker.handler(count)
    await worker.serve(worker_bus)
    app = IngressApp(config, ingress_bus)
    assert app.policy_state.shared is not None
    redis = app.policy_state.shared.redis
    runner = AsyncRunner(config, worker_bus, await open_results(config, worker_bus, redis))
    await runner.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            headers = {"prefer": "respond-async", "idempotency-key": "r1"}
            accepted = await client.post("/count", content=b"z", headers=headers)
            assert accepted.status_code == 202
            async_id = accepted.headers["location"].rsplit("/", 1)[1]
            result = await client.get(accepted.headers["location"], headers={"prefer": "wait=5"})
            assert result.text == "ok"
            assert await redis.exists(f"{prefix}:async_results:{async_id}")
            ttl = await redis.pttl(f"{prefix}:async_results:{async_id}")
            assert 0 < ttl <= 3_600_000
            again = await client.post("/count", content=b"z", headers=headers)
            assert again.headers["location"] == accepted.headers["location"]
            assert runs == [b"z"]
            keys = [k async for k in redis.scan_iter(f"{prefix}:idempotency:*")]
            assert len(keys) == 1
            assert 3_500_000 < await redis.pttl(keys[0]) <= 86_400_000
    finally:
        await runner.stop()
        await app.aclose()
        await ingress_bus.close()
        await worker_bus.close()


def test_async_on_kafka_without_redis_is_refused_at_config_check(tmp_path: Any) -> None:
    from contracts.config import ConfigError, load_config

    path = tmp_path / "kafka.yaml"
    path.write_text(
        "bus: {url: 'kafka://127.0.0.1:9092'}\n"
        "idempotency: {enabled: true}\n"
        "routes:\n"
        "  - name: r\n"
        "    when: {path: /r}\n"
        "    to: {type: worker, topic: r}\n"
        "    mode: async\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        "routes[0].mode: async requests on a Kafka bus need state.url (Redis) to keep their "
        "results (line 7)",
        "idempotency.enabled: idempotency keys on a Kafka bus need state.url (Redis) to be "
        "shared by every ingress node (line 2)",
    ]
    path.write_text(path.read_text() + "state: {url: 'redis://127.0.0.1:6379/0'}\n")
    assert [w.type for w in load_config(path).effective_workers()] == ["async"]


@pytest.mark.slow
async def test_nothing_is_accepted_while_the_bus_is_down(tmp_path: Any) -> None:
    """No 202 without the broker's ack: with NATS gone, async requests and events get a
    503 problem with Retry-After (after the 5 s ack timeout)."""
    nats = NatsServer(tmp_path).start()
    prefix = "t" + new_id()[:8]
    config = _config(prefix, {"events": {"types": {"ping": {"json_schema": {}}}}})
    bus = await _bus(nats.url, prefix, "ingress-down")
    app = IngressApp(config, bus)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw.test", timeout=30
        ) as client:
            assert (await client.post("/jobs/up", content=b"x")).status_code == 202
            nats.kill()
            refused = await client.post("/jobs/down", content=b"x")
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["type"].endswith("-unavailable")
            event = await client.post(
                "/events/ping",
                content=b"{}",
                headers={
                    "ce-id": "1",
                    "ce-source": "/t",
                    "ce-type": "ping",
                    "ce-specversion": "1.0",
                    "content-type": "application/json",
                },
            )
            assert event.status_code == 503, event.text
            assert event.json()["type"].endswith("/bus-unavailable")
    finally:
        await app.aclose()
        await bus.close()
        nats.stop()


def test_prefer_and_idempotency_key_are_read_as_rfc_7240_and_the_draft_write_them() -> None:
    from contracts.bus.pending import PendingReplies
    from ingress.async_requests import preferences
    from ingress.request import read_head

    def head(*headers: tuple[bytes, bytes]) -> Any:
        scope = {"method": "POST", "path": "/x", "query_string": b"", "headers": list(headers)}
        return read_head(scope, PendingReplies(10))

    assert preferences(head((b"prefer", b"respond-async; x=1, wait=5"))) == (True, None, 5.0)
    assert preferences(head((b"prefer", b"handling=lenient"), (b"prefer", b'wait="7"'))) == (
        False,
        None,
        7.0,
    )
    assert preferences(head((b"idempotency-key", b'"abc-1"'))) == (False, "abc-1", None)
    assert preferences(head((b"prefer", b"wait=soon"))) == (False, None, None)


async def test_a_result_of_an_authenticated_request_is_only_its_principals(
    nats_server: NatsServer,
) -> None:
    import base64

    import jwt

    secret = b"s" * 32
    prefix = "t" + new_id()[:8]
    config = Config(
        bus={"prefix": prefix},
        issuers={
            "test": {
                "issuer": "https://issuer.test/",
                "audience": ["gw"],
                "algorithms": ["HS256"],
                "keys": [{"jwk": {"kty": "oct", "k": base64.urlsafe_b64encode(secret).decode()}}],
            }
        },
        routes=[
            {
                "name": "jobs",
                "when": {"path": "/jobs"},
                "to": {"type": "worker", "topic": "echo"},
                "mode": "async",
                "policies": [{"type": "jwt"}],
            }
        ],
        async_requests={"policies": [{"type": "jwt", "optional": True}]},
    )

    def token(subject: str) -> dict[str, str]:
        claims = {"iss": "https://issuer.test/", "aud": "gw", "sub": subject, "exp": 2**31}
        return {"authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}

    ingress_bus = await _bus(nats_server.url, prefix, "ingress-o")
    worker_bus = await _bus(nats_server.url, prefix, "worker-o")
    worker = Worker("echo")
    worker.handler(echo)
    await worker.serve(worker_bus)
    app = IngressApp(config, ingress_bus)
    runner = AsyncRunner(config, worker_bus, await open_results(config, worker_bus, None))
    await runner.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            assert (await client.post("/jobs", content=b"x")).status_code == 401
            accepted = await client.post("/jobs", content=b"mine", headers=token("alice"))
            assert accepted.status_code == 202
            location = accepted.headers["location"]
            wait = {"prefer": "wait=5"}
            mine = await client.get(location, headers={**wait, **token("alice")})
            assert mine.status_code == 200
            assert mine.json()["principal"] == "alice"
            assert (await client.get(location, headers=token("bob"))).status_code == 404
            assert (await client.get(location)).status_code == 404
    finally:
        await runner.stop()
        await app.aclose()
        await ingress_bus.close()
        await worker_bus.close()
