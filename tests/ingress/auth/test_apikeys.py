"""API keys in process: hashing, rotation grace, revocation through the per-node cache,
route and scope checks of the `api_key` policy, on the SQLite file and on a real Redis."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from contracts.config import ApiKeyPolicy
from ingress.auth.apikeys import ApiKeyAuth, ApiKeys
from ingress.auth.store import RedisStore, SqliteStore, Store, hash_secret
from ingress.policies.base import RequestContext
from tests.support.processes import RedisServer


def context(route: str = "orders", **headers: str) -> RequestContext:
    return RequestContext(
        route,
        "GET",
        "/orders",
        [(k.replace("_", "-"), v) for k, v in headers.items()],
        "127.0.0.1",
        "free",
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path)
    yield opened
    await opened.aclose()


async def test_key_is_stored_as_a_sha256_of_its_secret_only(store: SqliteStore) -> None:
    keys = ApiKeys(store, ttl_ms=500, grace_s=60)
    key, record = await keys.create({"subject": "svc-a", "tier": "partner"})
    key_id, secret = key.removeprefix("rgk_").split("_", 1)
    assert record["id"] == key_id
    raw = store.path.read_bytes() + (store.path.parent / "credentials.db-wal").read_bytes()
    assert secret.encode() not in raw
    assert hash_secret(secret).encode() in raw
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert (await keys.verify(key) or {}).get("subject") == "svc-a"
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), key + "x", "rgk_" + key_id, ""):
        assert await keys.verify(wrong) is None


async def test_keys_outlive_the_store_object_that_wrote_them(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path)
    key, _ = await ApiKeys(first, 500, 60).create({"subject": "kept"})
    await first.aclose()
    second = SqliteStore(tmp_path)
    try:
        assert (await ApiKeys(second, 500, 60).verify(key) or {}).get("subject") == "kept"
    finally:
        await second.aclose()


async def test_rotated_key_keeps_the_old_secret_for_the_grace_period(store: SqliteStore) -> None:
    keys = ApiKeys(store, ttl_ms=0, grace_s=60)
    old, record = await keys.create({"subject": "svc"})
    rotated = await keys.rotate(record["id"], grace_s=0.4)
    assert rotated is not None
    new = rotated[0]
    assert new != old
    assert await keys.verify(new) is not None
    assert await keys.verify(old) is not None  # within the grace period
    await asyncio.sleep(0.5)
    assert await keys.verify(old) is None
    assert await keys.verify(new) is not None


async def revocation_reaches_another_node(writer_store: Store, reader_store: Store) -> float:
    """Two nodes' ApiKeys over one store: how long after a revocation on the first does
    the second, which had the key cached, refuse it."""
    writer = ApiKeys(writer_store, ttl_ms=500, grace_s=0)
    reader = ApiKeys(reader_store, ttl_ms=500, grace_s=0)
    key, record = await writer.create({"subject": "svc"})
    assert await reader.verify(key) is not None  # now cached on the reader
    await writer.revoke(record["id"])
    assert await writer.verify(key) is None  # the writer forgot its own copy at once
    started = time.monotonic()
    while await reader.verify(key) is not None:
        assert time.monotonic() - started < 1.0, "revocation not seen within 1 s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_revocation_reaches_a_node_sharing_the_file_within_a_second(
    tmp_path: Path,
) -> None:
    one, two = SqliteStore(tmp_path), SqliteStore(tmp_path)
    try:
        await revocation_reaches_another_node(one, two)
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.redis
async def test_revocation_reaches_a_node_sharing_redis_within_a_second(
    redis_server: RedisServer,
) -> None:
    a, b = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    try:
        await revocation_reaches_another_node(RedisStore(a, "t"), RedisStore(b, "t"))
        listed = await RedisStore(b, "t").list("api_key")
        assert len(listed) == 1
        assert listed[0]["revoked_ms"] is not None
    finally:
        await a.aclose()
        await b.aclose()


async def test_policy_authenticates_with_the_keys_tier_and_metadata(store: SqliteStore) -> None:
    keys = ApiKeys(store, 500, 60)
    key, _ = await keys.create(
        {
            "subject": "acme-app",
            "tenant": "acme",
            "roles": ["reader"],
            "scopes": ["orders:read"],
            "tier": "partner",
            "routes": ["orders"],
        }
    )
    policy = ApiKeyAuth(ApiKeyPolicy(type="api_key", scopes=["orders:read"]), keys)
    for ctx in (context(x_api_key=key), context(authorization=f"ApiKey {key}")):
        verdict = await policy(ctx)
        assert verdict.rejection is None
        assert ctx.principal is not None
        assert (ctx.principal.subject, ctx.principal.tenant, ctx.principal.authmethod) == (
            "acme-app",
            "acme",
            "api_key",
        )
        assert ctx.principal.roles == ["reader"]
        assert ctx.tier == ctx.principal.tier == "partner"


async def test_policy_refuses_missing_invalid_and_out_of_scope_keys(store: SqliteStore) -> None:
    keys = ApiKeys(store, 500, 60)
    key, _ = await keys.create({"subject": "s", "scopes": ["a"], "routes": ["orders"]})
    policy = ApiKeyAuth(ApiKeyPolicy(type="api_key", header="X-Key"), keys)

    missing = (await policy(context())).rejection
    assert missing is not None
    assert missing.status == 401
    assert (b"www-authenticate", b'ApiKey header="X-Key"') in missing.headers
    invalid = (await policy(context(x_key=key + "0"))).rejection
    assert invalid is not None
    assert invalid.status == 401
    elsewhere = (await policy(context("billing", x_key=key))).rejection
    assert elsewhere is not None
    assert (elsewhere.status, elsewhere.slug) == (403, "forbidden")
    scoped = ApiKeyAuth(ApiKeyPolicy(type="api_key", header="X-Key", scopes=["a", "b"]), keys)
    lacking = (await scoped(context(x_key=key))).rejection
    assert lacking is not None
    assert lacking.status == 403
    assert "b" in lacking.detail


class CountingStore(SqliteStore):
    """The real SQLite store, counting its reads."""

    reads = 0

    async def get(self, kind: str, key: str) -> dict[str, object] | None:
        self.reads += 1
        return await super().get(kind, key)


async def test_concurrent_lookups_of_a_key_share_one_read(tmp_path: Path) -> None:
    store = CountingStore(tmp_path)
    try:
        keys = ApiKeys(store, ttl_ms=1000, grace_s=0)
        key, _ = await keys.create({"subject": "svc"})
        results = await asyncio.gather(*(keys.verify(key) for _ in range(50)))
        assert all(r is not None for r in results)
        assert store.reads == 1
        await keys.verify(key)
        assert store.reads == 1  # cached
    finally:
        await store.aclose()


async def expiring_records_go_away(store: Store) -> None:
    soon = int(time.time() * 1000) + 300
    await store.put("revoked_token", "a", {"jti": "a"}, expires_ms=soon)
    await store.put("revoked_token", "b", {"jti": "b"})
    assert [r["jti"] for r in await store.list("revoked_token")] == ["a", "b"]
    assert await store.get("revoked_token", "a") == {"jti": "a"}
    await asyncio.sleep(0.4)
    assert await store.get("revoked_token", "a") is None
    assert [r["jti"] for r in await store.list("revoked_token")] == ["b"]
    await store.put("revoked_token", "c", {"jti": "c"}, expires_ms=soon + 60_000)


async def test_expiring_records_go_away_from_the_file(store: SqliteStore) -> None:
    await expiring_records_go_away(store)


@pytest.mark.redis
async def test_expiring_records_leave_no_trace_in_redis(redis_server: RedisServer) -> None:
    redis = Redis.from_url(redis_server.url)
    try:
        await expiring_records_go_away(RedisStore(redis, "t"))
        # The index holds only live records once a write has pruned it.
        assert sorted(await redis.zrange("t:cred:revoked_token", 0, -1)) == [b"b", b"c"]
    finally:
        await redis.aclose()
