"""The cache stores: the in-memory LRU's byte bound, and Redis failures as misses."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis

from ingress.cache import MemoryCacheStore, RedisCacheStore
from tests.support.processes import free_port


def test_memory_store_evicts_the_least_recently_used_entry_past_its_byte_bound() -> None:
    async def run() -> None:
        store = MemoryCacheStore(max_bytes=300)
        for name in ("a", "b", "c"):
            await store.set([(f"e\x1fr\x1f/{name}", b"x" * 90)], 60)
        assert await store.get(["e\x1fr\x1f/a"]) != [None]  # a is now the most recent
        await store.set([("e\x1fr\x1f/d", b"x" * 90)], 60)
        assert await store.get(["e\x1fr\x1f/b", "e\x1fr\x1f/a"]) == [None, b"x" * 90]
        assert store.size <= 300

    asyncio.run(run())


def test_an_unreachable_redis_is_a_miss_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        client = Redis.from_url(
            f"redis://127.0.0.1:{free_port()}/0", socket_timeout=0.2, socket_connect_timeout=0.2
        )
        store = RedisCacheStore(client, "rg")
        try:
            await store.set([("e\x1fr\x1f/a", b"x")], 60)
            assert await store.get(["e\x1fr\x1f/a"]) == [None]
            assert await store.get(["e\x1fr\x1f/a"]) == [None]
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING, "relaygate.cache"):
        asyncio.run(run())
    assert len([r for r in caplog.records if "Redis unavailable" in r.message]) == 1
