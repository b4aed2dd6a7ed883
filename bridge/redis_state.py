"""The bridge's state in Redis, for a Kafka bus (`state.url`): endpoints in a hash with a
change channel every replica listens to, journals as Redis streams whose entry ids are
`<seq>-0` so that records are numbered like JetStream's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from bridge.model import Endpoint
from bridge.state import Conflict, EndpointStore, Entry, Journal, OnChange

log = logging.getLogger("relaygate.bridge")

_CHUNK = 500
_MAX_SCAN = 100_000

# KEYS: stream, counter, dedupe key ("" when none; remembered 10 min). ARGV: key, data,
# maxlen.
_APPEND = """
if KEYS[3] ~= '' and not redis.call('SET', KEYS[3], '1', 'NX', 'EX', 600) then
  return 0
end
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], n .. '-0', 'k', ARGV[1], 'd', ARGV[2])
return n
"""


class RedisEndpointStore(EndpointStore):
    """Endpoints in the hash `<prefix>:webhooks:endpoints`; each write publishes the id
    on `<prefix>:webhooks:changes`. After a lost connection a watcher reloads them all."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._hash = f"{prefix}:webhooks:endpoints"
        self._channel = f"{prefix}:webhooks:changes"
        self._watching: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._redis.ping()

    async def get(self, endpoint_id: str) -> Endpoint | None:
        raw = await self._redis.hget(self._hash, endpoint_id)
        return None if raw is None else Endpoint.model_validate_json(raw)

    async def list(self) -> list[Endpoint]:
        values = await self._redis.hvals(self._hash)
        return sorted((Endpoint.model_validate_json(v) for v in values), key=lambda e: e.created_ms)

    async def create(self, endpoint: Endpoint) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self._hash, endpoint.id, endpoint.model_dump_json())
            pipe.publish(self._channel, endpoint.id)
            await pipe.execute()

    async def modify(
        self, endpoint_id: str, change: Callable[[Endpoint], Endpoint]
    ) -> Endpoint | None:
        for _ in range(10):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(self._hash)
                    raw = await pipe.hget(self._hash, endpoint_id)
                    if raw is None:
                        return None
                    new = change(Endpoint.model_validate_json(raw))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(self._hash, endpoint_id, new.model_dump_json())
                    pipe.publish(self._channel, endpoint_id)
                    await pipe.execute()
                    return new
                except WatchError:
                    continue
        raise Conflict(endpoint_id)

    async def delete(self, endpoint_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._hash, endpoint_id)
            pipe.publish(self._channel, endpoint_id)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def watch(self, on_change: OnChange) -> None:
        ready = asyncio.get_running_loop().create_future()
        self._watching = asyncio.get_running_loop().create_task(self._follow(on_change, ready))
        await ready

    async def _follow(self, on_change: OnChange, ready: asyncio.Future[None]) -> None:
        known: set[str] = set()
        while True:
            pubsub = self._redis.pubsub()
            try:
                # Subscribe first, then load: a change made in between is not missed.
                await pubsub.subscribe(self._channel)
                current = {e.id: e for e in await self.list()}
                for endpoint_id in known - set(current):
                    await self._apply(on_change, endpoint_id, None)
                for endpoint in current.values():
                    await self._apply(on_change, endpoint.id, endpoint)
                known = set(current)
                if not ready.done():
                    ready.set_result(None)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    endpoint_id = _text(message["data"])
                    changed = await self.get(endpoint_id)
                    if changed is None:
                        known.discard(endpoint_id)
                    else:
                        known.add(endpoint_id)
                    await self._apply(on_change, endpoint_id, changed)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("bridge: watching endpoints in Redis failed (%r); retrying", exc)
                if not ready.done():
                    ready.set_exception(exc)
                    return
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    @staticmethod
    async def _apply(on_change: OnChange, endpoint_id: str, endpoint: Endpoint | None) -> None:
        try:
            await on_change(endpoint_id, endpoint)
        except Exception:
            log.exception("applying the change of endpoint %s failed", endpoint_id)

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)


class RedisJournal(Journal):
    """A Redis stream `<prefix>:<name>` of (key, data) records, trimmed to about `maxlen`."""

    def __init__(self, redis: Redis, prefix: str, name: str, *, maxlen: int) -> None:
        self._redis = redis
        self._stream = f"{prefix}:{name}"
        self._counter = f"{prefix}:{name}:seq"
        self._maxlen = maxlen
        self._append: Any = redis.register_script(_APPEND)

    async def open(self) -> None:
        await self._redis.ping()

    async def append(self, key: str, data: bytes, *, msg_id: str | None = None) -> None:
        dedupe = f"{self._stream}:id:{msg_id}" if msg_id else ""
        await self._append(
            keys=[self._stream, self._counter, dedupe], args=[key, data, self._maxlen]
        )

    async def scan(self, key: str | None, *, limit: int, newest_first: bool = False) -> list[Entry]:
        found: list[Entry] = []
        cursor = "+" if newest_first else "-"
        scanned = 0
        while len(found) < limit and scanned < _MAX_SCAN:
            if newest_first:
                chunk = await self._records(
                    self._redis.xrevrange(self._stream, cursor, "-", count=_CHUNK)
                )
            else:
                chunk = await self._records(
                    self._redis.xrange(self._stream, cursor, "+", count=_CHUNK)
                )
            if not chunk:
                break
            scanned += len(chunk)
            for stream_id, fields in chunk:
                entry = _entry(stream_id, fields)
                if key is None or entry.key == key:
                    found.append(entry)
            last = _seq(chunk[-1][0])
            cursor = f"({last}-0"
            if len(chunk) < _CHUNK:
                break
        return found[:limit]

    async def get(self, seq: int) -> Entry | None:
        chunk = await self._records(self._redis.xrange(self._stream, f"{seq}-0", f"{seq}-0"))
        return _entry(*chunk[0]) if chunk else None

    async def remove(self, seq: int) -> bool:
        return bool(await self._redis.xdel(self._stream, f"{seq}-0"))

    @staticmethod
    async def _records(call: Awaitable[Any]) -> list[tuple[bytes, dict[bytes, Any]]]:
        """redis-py types stream replies loosely; they are (id, fields) pairs of bytes."""
        return list(await call or [])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _seq(stream_id: bytes | str) -> int:
    return int(_text(stream_id).split("-", 1)[0])


def _entry(stream_id: bytes | str, fields: dict[bytes, Any]) -> Entry:
    return Entry(_seq(stream_id), _text(fields[b"k"]), fields[b"d"])
