"""Where cached responses live: an LRU in memory bounded in bytes, or Redis (shared by
every ingress node, bounded by each entry's TTL and Redis's own `maxmemory`).

Keys are `kind \\x1f route \\x1f path \\x1f query \\x1f caller [\\x1f vary values]`, so that a
purge by route or by route and path is a prefix match."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("relaygate.cache")

SEP = "\x1f"


class CacheStore(Protocol):
    async def get(self, keys: list[str]) -> list[bytes | None]: ...

    async def set(self, items: list[tuple[str, bytes]], ttl_s: float) -> None: ...

    async def purge(self, route: str | None, path: str | None) -> int: ...


def _selected(key: str, route: str | None, path: str | None) -> bool:
    parts = key.split(SEP, 3)
    return (route is None or parts[1] == route) and (path is None or parts[2] == path)


class MemoryCacheStore:
    """LRU by bytes (key + value); expired entries go when read or evicted."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def get(self, keys: list[str]) -> list[bytes | None]:
        return [self._get(key) for key in keys]

    async def set(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        for key, value in items:
            self._set(key, value, ttl_s)

    def _get(self, key: str) -> bytes | None:
        found = self.entries.get(key)
        if found is None:
            return None
        if found[1] <= time.monotonic():
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return found[0]

    def _set(self, key: str, value: bytes, ttl_s: float) -> None:
        cost = len(key) + len(value)
        if cost > self.max_bytes:
            return
        self._drop(key)
        self.entries[key] = (value, time.monotonic() + ttl_s)
        self.size += cost
        while self.size > self.max_bytes:
            self._drop(next(iter(self.entries)))

    async def purge(self, route: str | None, path: str | None) -> int:
        doomed = [key for key in self.entries if _selected(key, route, path)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    def _drop(self, key: str) -> None:
        found = self.entries.pop(key, None)
        if found is not None:
            self.size -= len(key) + len(found[0])


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


RETRY_AFTER_FAILURE_S = 1.0
MAX_BATCH = 512  # keys per MGET


class RedisCacheStore:
    """Shared entries under `<prefix>:cache:`; a Redis failure is a miss, logged once per
    outage, never an error to the client. After a failure Redis is left alone for a
    second, so that an outage does not add a timeout to every request.

    Lookups that arrive while an MGET is in flight go together in the next one: a
    redis-py round trip costs about 200 us of CPU, far more than the GETs themselves
    (the same reason the rate limiter batches its decisions)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.namespace = f"{prefix}:cache:"
        self.failing = False
        self.failed_at = 0.0
        self._queue: list[tuple[list[str], asyncio.Future[list[bytes | None]]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None

    def _resting(self) -> bool:
        return self.failing and time.monotonic() - self.failed_at < RETRY_AFTER_FAILURE_S

    async def get(self, keys: list[str]) -> list[bytes | None]:
        if self._resting():
            return [None] * len(keys)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bytes | None]] = loop.create_future()
        self._queue.append((keys, future))
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch: list[tuple[list[str], asyncio.Future[list[bytes | None]]]] = []
                size = 0
                while self._queue and (not batch or size + len(self._queue[0][0]) <= MAX_BATCH):
                    batch.append(self._queue.pop(0))
                    size += len(batch[-1][0])
                values = await self._mget([key for keys, _ in batch for key in keys])
                start = 0
                for keys, future in batch:
                    if not future.done():
                        future.set_result(values[start : start + len(keys)])
                    start += len(keys)
        finally:
            self._flushing = False

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        try:
            values = await self.redis.mget([self.namespace + key for key in keys])
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return [None] * len(keys)
        self.failing = False
        return [value if isinstance(value, bytes) else None for value in values]

    async def set(self, items: list[tuple[str, bytes]], ttl_s: float) -> None:
        if self._resting():
            return
        ttl_ms = max(1, round(ttl_s * 1000))
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, value in items:
                    pipe.set(self.namespace + key, value, px=ttl_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def purge(self, route: str | None, path: str | None) -> int:
        pattern = self.namespace + "?" + SEP
        pattern += _glob_escape(route) + SEP if route is not None else "*"
        if path is not None:
            pattern += (SEP if route is None else "") + _glob_escape(path) + SEP
        pattern += "*"
        purged: int = 0
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                purged += await self.redis.delete(*batch)
                batch.clear()
        if batch:
            purged += await self.redis.delete(*batch)
        return purged

    def _failed(self, exc: Exception) -> None:
        if not self.failing:
            log.warning("response cache: Redis unavailable, serving uncached: %s", exc)
        self.failing = True
        self.failed_at = time.monotonic()
