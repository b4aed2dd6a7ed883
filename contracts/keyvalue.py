"""Small key-value buckets with a time to live, shared by every node: async results and
idempotency keys. Redis when `state.url` is set; else the bus's own store (a JetStream
key-value bucket on NATS); in memory on the memory bus (one process, tests).

Every write renews the key's TTL (Redis: per key; JetStream: the bucket's max age, which
counts from the last write of a key). `replace` is compare-and-set on a revision that
`get` returned, so two nodes racing on one key cannot both win.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any

from contracts.bus import Bus


@dataclass(slots=True, frozen=True)
class Entry:
    value: bytes
    revision: Any  # opaque: hand it back to `replace`


class Bucket(abc.ABC):
    @abc.abstractmethod
    async def get(self, key: str) -> Entry | None: ...

    @abc.abstractmethod
    async def create(self, key: str, value: bytes) -> bool:
        """Store `value` only if `key` is absent; False if it was there."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    async def replace(self, key: str, value: bytes, revision: Any) -> bool:
        """Store `value` only if the key is still at `revision`; False if it moved."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None: ...


class MemoryBucket(Bucket):
    """One process only: the memory bus's store, and what tests build on."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._items: dict[str, tuple[bytes, int, float]] = {}
        self._revision = 0

    def _live(self, key: str) -> tuple[bytes, int, float] | None:
        item = self._items.get(key)
        if item is not None and item[2] <= time.monotonic():
            del self._items[key]
            return None
        return item

    def _store(self, key: str, value: bytes) -> None:
        self._revision += 1
        self._items[key] = (value, self._revision, time.monotonic() + self._ttl_s)

    async def get(self, key: str) -> Entry | None:
        item = self._live(key)
        return None if item is None else Entry(item[0], item[1])

    async def create(self, key: str, value: bytes) -> bool:
        if self._live(key) is not None:
            return False
        self._store(key, value)
        return True

    async def put(self, key: str, value: bytes) -> None:
        self._store(key, value)

    async def replace(self, key: str, value: bytes, revision: Any) -> bool:
        item = self._live(key)
        if item is None or item[1] != revision:
            return False
        self._store(key, value)
        return True

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)


# KEYS[1] = key; ARGV = expected value, new value, ttl ms
_REPLACE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class RedisBucket(Bucket):
    """Keys `<prefix>:<bucket>:<key>`, each with the bucket's TTL; the revision of an
    entry is its value (compare-and-set by a script)."""

    def __init__(self, redis: Any, prefix: str, bucket: str, ttl_s: float) -> None:
        self._redis = redis
        self._prefix = f"{prefix}:{bucket}:"
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._replace = redis.register_script(_REPLACE)

    async def get(self, key: str) -> Entry | None:
        value = await self._redis.get(self._prefix + key)
        return None if value is None else Entry(bytes(value), bytes(value))

    async def create(self, key: str, value: bytes) -> bool:
        return bool(await self._redis.set(self._prefix + key, value, px=self._ttl_ms, nx=True))

    async def put(self, key: str, value: bytes) -> None:
        await self._redis.set(self._prefix + key, value, px=self._ttl_ms)

    async def replace(self, key: str, value: bytes, revision: Any) -> bool:
        done = await self._replace(keys=[self._prefix + key], args=[revision, value, self._ttl_ms])
        return bool(done)

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._prefix + key)


class JetStreamBucket(Bucket):
    """A JetStream key-value bucket `<prefix>_<bucket>` (file storage, one value per key,
    max age = the TTL): durable across a NATS restart, shared by every node."""

    def __init__(self, kv: Any) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, bus: Bus, prefix: str, bucket: str, ttl_s: float) -> JetStreamBucket:
        import nats.js.errors
        from nats.js import api

        from contracts.bus.nats import NatsBus

        assert isinstance(bus, NatsBus)
        js = bus.jetstream()
        name = f"{prefix}_{bucket}".replace(".", "_")
        try:
            kv = await js.key_value(name)
        except nats.js.errors.BucketNotFoundError:
            try:
                kv = await js.create_key_value(
                    bucket=name, ttl=ttl_s, history=1, storage=api.StorageType.FILE
                )
            except nats.js.errors.BadRequestError:  # another node created it first
                kv = await js.key_value(name)
        return cls(kv)

    async def get(self, key: str) -> Entry | None:
        import nats.js.errors

        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return Entry(entry.value, entry.revision)

    async def create(self, key: str, value: bytes) -> bool:
        import nats.js.errors

        try:
            await self._kv.create(key, value)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def put(self, key: str, value: bytes) -> None:
        await self._kv.put(key, value)

    async def replace(self, key: str, value: bytes, revision: Any) -> bool:
        import nats.js.errors

        try:
            await self._kv.update(key, value, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._kv.delete(key)


async def open_bucket(
    bus: Bus, redis: Any | None, prefix: str, bucket: str, ttl_s: float
) -> Bucket:
    """The bucket for this deployment: Redis if given, else the bus's store."""
    if redis is not None:
        return RedisBucket(redis, prefix, bucket, ttl_s)
    if bus.system == "nats":
        return await JetStreamBucket.open(bus, prefix, bucket, ttl_s)
    if bus.system == "memory":
        return MemoryBucket(ttl_s)
    raise ValueError(f"a {bus.system} bus has no key-value store: set state.url (Redis)")
