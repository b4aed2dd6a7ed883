"""Rate limiting: exact across ingress nodes through one real Redis, tiers and quotas,
the IETF headers, and the configured fallback when Redis dies under load."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from contracts.config import Config
from contracts.envelope import Principal
from ingress.policies import PolicyState, RequestContext, TierResolver
from ingress.state.limiter import MemoryLimiter, WindowLimit, current_quotas
from tests.support.gateway import IngressNode, RelaygateRole, stop_all, write_config
from tests.support.processes import NatsServer, RedisServer

# ------------------------------------------------------------------ in process


def test_sliding_window_never_admits_more_than_the_limit_in_any_window() -> None:
    limiter = MemoryLimiter()
    window = (WindowLimit(requests=5, window_ms=200),)
    admitted: list[float] = []
    deadline = time.monotonic() + 0.7
    while time.monotonic() < deadline:
        if limiter.hit("k", window, ()).allowed:
            admitted.append(time.monotonic())
        time.sleep(0.002)
    for i, start in enumerate(admitted):
        # Stamped after each call returns, so allow the call's own few milliseconds.
        inside = [t for t in admitted[i:] if t - start < 0.19]
        assert len(inside) <= 5
    assert len(admitted) >= 15  # and it does refill as the window slides


def test_denied_request_says_when_a_slot_frees() -> None:
    limiter = MemoryLimiter()
    window = (WindowLimit(requests=2, window_ms=1000),)
    assert limiter.hit("k", window, ()).allowed
    assert limiter.hit("k", window, ()).allowed
    denied = limiter.hit("k", window, ())
    assert not denied.allowed
    assert 900 < denied.retry_after_ms <= 1000
    assert limiter.hit("other", window, ()).allowed  # keys are separate


def test_daily_quota_stops_a_caller_until_the_next_day() -> None:
    limiter = MemoryLimiter()
    quotas = current_quotas(daily=3, monthly=None)
    assert [limiter.hit("k", (), quotas).allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.hit("k", (), quotas).retry_after_ms == quotas[0].ttl_ms


CONFIG: dict[str, Any] = {
    "tiers": {
        "free": {"limits": [{"requests": 2, "window_s": 60}], "quota": {"daily": 100}},
        "partner": {"limits": [{"requests": 5, "window_s": 60}]},
        "internal": {},
    },
    "caller": {
        "default_tier": "free",
        "tier_header": "x-client-tier",
        "networks": {"10.0.0.0/8": "internal"},
    },
    "routes": [
        {
            "name": "r",
            "when": {"path": "/r"},
            "to": {"type": "worker", "topic": "r"},
            "policies": [{"type": "rate_limit", "name": "per-caller", "key": ["client_address"]}],
        }
    ],
}


async def _statuses(config: Config, tier_header: str | None, ip: str, n: int) -> list[int]:
    state = PolicyState(config)
    (policy,) = state.build(config, config.routes[0].policies)
    tiers = TierResolver(config)
    headers = [("x-client-tier", tier_header)] if tier_header else []
    out = []
    for _ in range(n):
        ctx = RequestContext("r", "GET", "/r", headers, ip, tiers(None, headers, ip))
        verdict = await policy(ctx)
        out.append(429 if verdict.rejection else 200)
    return out


async def test_each_tier_gets_its_own_limit() -> None:
    config = Config(**CONFIG)
    assert await _statuses(config, None, "192.0.2.1", 3) == [200, 200, 429]
    assert await _statuses(config, "partner", "192.0.2.2", 6) == [200] * 5 + [429]
    assert await _statuses(config, None, "10.1.2.3", 20) == [200] * 20  # internal: no limit
    assert await _statuses(config, "no-such-tier", "192.0.2.3", 3) == [200, 200, 429]


def test_principal_tier_wins_over_header_and_network() -> None:
    tiers = TierResolver(Config(**CONFIG))
    principal = Principal("alice", tier="partner")
    assert tiers(principal, [("x-client-tier", "free")], "10.0.0.1") == "partner"
    assert tiers(None, [("x-client-tier", "partner")], "10.0.0.1") == "partner"
    assert tiers(None, [], "10.0.0.1") == "internal"
    assert tiers(None, [], "2001:db8::1") == "free"


async def test_headers_follow_the_ietf_draft() -> None:
    config = Config(**CONFIG)
    (policy,) = PolicyState(config).build(config, config.routes[0].policies)
    ctx = RequestContext("r", "GET", "/r", [], "192.0.2.9", "free")
    first = dict(await _run(policy, ctx))
    assert first[b"ratelimit-policy"] == b'"per-caller-0";q=2;w=60, "per-caller-daily";q=100'
    assert first[b"ratelimit"] == b'"per-caller-0";r=1;t=60'
    await policy(ctx)
    denied = await policy(ctx)
    assert denied.rejection is not None
    assert denied.rejection.status == 429
    headers = dict(denied.rejection.headers)
    assert headers[b"ratelimit"].startswith(b'"per-caller-0";r=0;t=')
    assert 1 <= int(headers[b"retry-after"]) <= 60


async def _run(policy: Any, ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    verdict = await policy(ctx)
    assert verdict.rejection is None
    headers: list[tuple[bytes, bytes]] = verdict.headers
    return headers


# ------------------------------------------- three ingress nodes, one real Redis

LIMIT = 100
WINDOW_S = 4.0
CLIENTS = 50


@pytest.fixture
def limited_cluster(
    nats_server: NatsServer, redis_server: RedisServer, tmp_path: Path
) -> Iterator[list[IngressNode]]:
    prefix = f"rl-{uuid.uuid4().hex[:10]}"
    config_file = write_config(
        tmp_path / "rl.yaml",
        {
            "bus": {"url": nats_server.url, "prefix": prefix},
            "state": {"url": redis_server.url, "timeout_ms": 200},
            "routes": [
                {
                    "name": "limited",
                    "when": {"path": "/limited/{key}"},
                    "to": {"type": "worker", "topic": "echo"},
                    "policies": [
                        {
                            "type": "rate_limit",
                            "name": "shared",
                            "key": ["header:x-key"],
                            "limits": [{"requests": LIMIT, "window_s": WINDOW_S}],
                        }
                    ],
                }
            ],
        },
    )
    worker = RelaygateRole(tmp_path, "worker", config_file, ["worker", "echo", "--topic", "echo"])
    nodes = [IngressNode(tmp_path, f"ingress-{i}", config_file) for i in (1, 2, 3)]
    processes: list[RelaygateRole] = [worker, *nodes]
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready()
        yield nodes
    finally:
        stop_all(processes)


async def _hammer(
    nodes: list[IngressNode], key: str, total: int
) -> list[tuple[int, dict[str, str]]]:
    """`total` requests on one key from CLIENTS concurrent clients spread over the nodes."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    results: list[tuple[int, dict[str, str]]] = []
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                url = f"{nodes[i % len(nodes)].url}/limited/x"
                async with session.get(url, headers={"x-key": key}) as response:
                    await response.read()
                    headers = {k.lower(): v for k, v in response.headers.items()}
                    results.append((response.status, headers))

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return results


@pytest.mark.redis
@pytest.mark.nats
@pytest.mark.e2e
async def test_three_nodes_admit_exactly_the_limit_per_window(
    limited_cluster: list[IngressNode],
) -> None:
    key = uuid.uuid4().hex
    for _window in range(2):
        started = time.monotonic()
        results = await _hammer(limited_cluster, key, 3 * LIMIT)
        assert time.monotonic() - started < WINDOW_S, "the burst must fit in one window"
        statuses = Counter(status for status, _ in results)
        assert statuses == {200: LIMIT, 429: 2 * LIMIT}
        for status, headers in results:
            if status == 429:
                assert 1 <= int(headers["retry-after"]) <= WINDOW_S
                assert headers["content-type"] == "application/problem+json"
            assert headers["ratelimit-policy"] == f'"shared-0";q={LIMIT};w={int(WINDOW_S)}'
        await asyncio.sleep(WINDOW_S + 0.2)  # the whole window slides out


@pytest.mark.redis
@pytest.mark.nats
@pytest.mark.e2e
async def test_redis_killed_under_load_falls_back_locally_and_exactness_returns(
    limited_cluster: list[IngressNode], redis_server: RedisServer
) -> None:
    redis_server.kill()
    results = await _hammer(limited_cluster, uuid.uuid4().hex, 6 * LIMIT)
    statuses = Counter(status for status, _ in results)
    # Fallback `local`: each node limits on its own, so up to LIMIT per node; never a 500.
    assert set(statuses) <= {200, 429}, statuses
    assert LIMIT < statuses[200] <= 3 * LIMIT
    logs = "".join(node.log() for node in limited_cluster)
    assert logs.count("unreachable") == 3  # one warning per node for the outage

    restarted = RedisServer(redis_server.log_path.parent, port=redis_server.port).start()
    try:
        back = time.monotonic()
        while True:  # exact again within 5 s: a fresh key admits exactly LIMIT across nodes
            statuses = Counter(
                s for s, _ in await _hammer(limited_cluster, uuid.uuid4().hex, 3 * LIMIT)
            )
            if statuses[200] == LIMIT:
                break
            assert time.monotonic() - back < 5.0, f"still not exact: {statuses}"
            await asyncio.sleep(0.2)
    finally:
        restarted.stop()
