"""Where credentials live: JSON records by kind and id, in a SQLite file (one node, the
embedded default) or in Redis (shared by every ingress node); and a short per-node cache
in front, so that a revocation reaches every node within `state.credentials_ttl_ms`.

Secrets are stored as SHA-256 digests: they are 256-bit random values the gateway made,
so a slow password hash would add cost and no safety (nothing to brute-force)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from contracts.config import Config

log = logging.getLogger("relaygate.credentials")

Record = dict[str, Any]
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The credential store cannot be read or written (Redis down, disk error)."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, digest: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), digest)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Store(Protocol):
    async def get(self, kind: str, key: str) -> Record | None: ...

    async def put(self, kind: str, key: str, record: Record, expires_ms: int | None = None) -> None:
        """Create or replace; `expires_ms` (epoch ms): the record goes away then."""

    async def list(self, kind: str) -> list[Record]: ...

    async def aclose(self) -> None: ...


def default_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "relaygate"


class SqliteStore:
    """One file, one connection, one thread: every call runs on that thread, in order.
    Opened on first use, so a gateway that issues no credentials creates no file."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "credentials.db"
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="credentials")
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)  # it holds signing keys
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, "
                "doc BLOB NOT NULL, expires_ms INTEGER, PRIMARY KEY (kind, key))"
            )
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            return work(self._open())

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"{self.path}: {exc}") from exc

    async def get(self, kind: str, key: str) -> Record | None:
        def work(db: sqlite3.Connection) -> Any:
            return db.execute(
                "SELECT doc FROM records WHERE kind = ? AND key = ? "
                "AND (expires_ms IS NULL OR expires_ms > ?)",
                (kind, key, now_ms()),
            ).fetchone()

        row = await self._run(work)
        return None if row is None else _load(row[0])

    async def put(self, kind: str, key: str, record: Record, expires_ms: int | None = None) -> None:
        doc = orjson.dumps(record)

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO records (kind, key, doc, expires_ms) VALUES (?, ?, ?, ?)",
                (kind, key, doc, expires_ms),
            )
            if expires_ms is not None:  # expired records go as new ones of their kind come
                db.execute(
                    "DELETE FROM records WHERE kind = ? AND expires_ms <= ?", (kind, now_ms())
                )

        await self._run(work)

    async def list(self, kind: str) -> list[Record]:
        def work(db: sqlite3.Connection) -> list[Any]:
            return db.execute(
                "SELECT doc FROM records WHERE kind = ? "
                "AND (expires_ms IS NULL OR expires_ms > ?) ORDER BY key",
                (kind, now_ms()),
            ).fetchall()

        return [_load(row[0]) for row in await self._run(work)]

    async def aclose(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)


class RedisStore:
    """`<prefix>:cred:<kind>:<key>` holds a record (with PXAT when it expires); the sorted
    set `<prefix>:cred:<kind>` indexes its kind's keys by expiry (+inf: never), pruned on
    each write, so that listing is one read and expired records leave no trace."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = f"{prefix}:cred"

    async def _call(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def get(self, kind: str, key: str) -> Record | None:
        raw = await self._call(self.redis.get(f"{self.prefix}:{kind}:{key}"))
        return None if raw is None else _load(raw)

    async def put(self, kind: str, key: str, record: Record, expires_ms: int | None = None) -> None:
        index = f"{self.prefix}:{kind}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(f"{index}:{key}", orjson.dumps(record), pxat=expires_ms)
        pipe.zadd(index, {key: float("inf") if expires_ms is None else expires_ms})
        pipe.zremrangebyscore(index, "-inf", now_ms())
        await self._call(pipe.execute())

    async def list(self, kind: str) -> list[Record]:
        index = f"{self.prefix}:{kind}"
        members = await self._call(self.redis.zrangebyscore(index, now_ms() + 1, "+inf"))
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in members)
        if not keys:
            return []
        raws = await self._call(self.redis.mget([f"{index}:{k}" for k in keys]))
        return [_load(raw) for raw in raws if raw is not None]

    async def aclose(self) -> None:
        return None  # the connection belongs to the rate limiter's client


def open_store(config: Config, redis: Redis | None) -> Store:
    if redis is not None:
        return RedisStore(redis, config.bus.prefix)
    return SqliteStore(config.state.dir or default_dir())


def _load(raw: bytes | str) -> Record:
    record: Record = orjson.loads(raw)
    return record


class RecordCache:
    """Records read through the store, trusted for `ttl_ms`; concurrent misses of one key
    share one read, which a cancelled caller does not cancel. Bounded: past
    `max_entries` the oldest entries go."""

    def __init__(self, store: Store, kind: str, ttl_ms: int, max_entries: int = 10_000) -> None:
        self.store = store
        self.kind = kind
        self.ttl = ttl_ms / 1000
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[float, Record | None]] = OrderedDict()
        self.reading: dict[str, asyncio.Task[Record | None]] = {}
        self.changes = 0  # bumped by `forget`: a read that started before is not cached

    async def get(self, key: str, max_age_s: float | None = None) -> Record | None:
        """`max_age_s`: read again if what is cached is older than that (a caller that
        suspects its copy is out of date, e.g. a secret that matches nothing)."""
        found = self.entries.get(key)
        if found is not None:
            now = time.monotonic()
            if found[0] > now and (max_age_s is None or found[0] - self.ttl + max_age_s > now):
                return found[1]
        reading = self.reading.get(key)
        if reading is None:
            reading = asyncio.get_running_loop().create_task(self._read(key))
            self.reading[key] = reading
        return await asyncio.shield(reading)

    async def _read(self, key: str) -> Record | None:
        changes = self.changes
        try:
            record = await self.store.get(self.kind, key)
        finally:
            del self.reading[key]
        if changes == self.changes:
            self.entries[key] = (time.monotonic() + self.ttl, record)
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        return record

    def forget(self, key: str) -> None:
        """This node changed the record: read it again next time."""
        self.entries.pop(key, None)
        self.changes += 1
