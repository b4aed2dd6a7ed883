"""Per-route response caching at the ingress: a hit is answered without a bus hop.

`ResponseCache.key` says whether a request may use the cache and under which key (the
caller's credentials are part of it), `lookup` finds a fresh or stale entry for it,
`store` keeps a reply the upstream allows to be reused (see freshness.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from contracts.config import CacheOptions
from contracts.envelope import Principal
from ingress.cache.freshness import cache_control, freshness, not_modified
from ingress.cache.store import SEP, CacheStore, MemoryCacheStore, RedisCacheStore

__all__ = ["CacheKey", "Cached", "MemoryCacheStore", "RedisCacheStore", "ResponseCache"]

log = logging.getLogger("relaygate.cache")

# Headers a 304 repeats from the stored response (RFC 9110 §15.4.5).
_NOT_MODIFIED_HEADERS = frozenset(
    {"cache-control", "content-location", "etag", "expires", "last-modified", "vary"}
)


@dataclass(slots=True, frozen=True)
class CacheKey:
    base: str
    per_caller: bool  # the key holds the caller's credentials
    revalidate: bool  # the request asked for a fresh answer: do not reuse, but store


@dataclass(slots=True, frozen=True)
class Cached:
    state: Literal["hit", "stale"]
    key: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    age_s: int

    def not_modified(self, request: dict[str, str]) -> bool:
        fields = dict(self.headers)
        return not_modified(request, fields.get("etag"), fields.get("last-modified"))

    def validators(self) -> list[tuple[str, str]]:
        return [(name, value) for name, value in self.headers if name in _NOT_MODIFIED_HEADERS]


class ResponseCache:
    def __init__(self, store: CacheStore) -> None:
        self.backend = store
        self.refreshing: dict[str, asyncio.Task[None]] = {}

    @staticmethod
    def key(
        route: str,
        options: CacheOptions,
        path: str,
        query: str,
        request: dict[str, str],
        principal: Principal | None = None,
    ) -> CacheKey | None:
        """None: this request bypasses the cache (neither read nor stored).

        An authenticated caller (a principal from the edge policies, whatever carried
        its credentials: a bearer token, an API key header, a client certificate) gets
        entries of its own; so does an unauthenticated request with credentials."""
        cc = cache_control(request.get("cache-control"))
        if "no-store" in cc:
            return None
        authorization, cookie = request.get("authorization"), request.get("cookie")
        caller = "-"
        if principal is not None:
            if not options.vary_on_principal:
                return None
            identity = f"{principal.authmethod}\0{principal.tenant or ''}\0{principal.subject}"
            caller = hashlib.sha256(identity.encode()).hexdigest()[:32]
        elif authorization is not None or cookie is not None:
            if not options.vary_on_principal:
                return None
            credentials = f"{authorization or ''}\0{cookie or ''}".encode("latin-1")
            caller = hashlib.sha256(credentials).hexdigest()[:32]
        revalidate = "no-cache" in cc or cc.get("max-age") == "0"
        return CacheKey(SEP.join((route, path, query, caller)), caller != "-", revalidate)

    async def lookup(self, key: CacheKey, request: dict[str, str]) -> Cached | None:
        if key.revalidate:
            return None
        # One round trip when the reply has no Vary (its entry key is then known).
        plain = self._entry_key(key.base, "", request)
        names, blob = await self.backend.get(["v" + SEP + key.base, plain])
        if names is None:
            return None
        entry_key = plain
        if names:
            entry_key = self._entry_key(key.base, names.decode("latin-1"), request)
            (blob,) = await self.backend.get([entry_key])
        if blob is None:
            return None
        raw_meta, _, body = blob.partition(b"\n")
        meta = json.loads(raw_meta)
        age = meta["a"] + time.time() - meta["t"]
        if age < meta["l"]:
            state: Literal["hit", "stale"] = "hit"
        elif age < meta["l"] + meta["w"]:
            state = "stale"
        else:
            return None
        headers = [(name, value) for name, value in meta["h"]]
        return Cached(state, entry_key, meta["s"], headers, body, int(age))

    async def store(
        self,
        key: CacheKey,
        options: CacheOptions,
        request: dict[str, str],
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        if len(body) > options.max_entry_bytes:
            return
        fields = {name.lower(): value for name, value in headers}
        fresh = freshness(status, fields, default_ttl_s=options.ttl_s, per_caller=key.per_caller)
        if fresh is None:
            return
        vary = sorted({n.strip().lower() for n in fields.get("vary", "").split(",") if n.strip()})
        names = ",".join(vary)
        ttl = fresh.lifetime_s + fresh.stale_s - fresh.age_s
        kept = [(name.lower(), value) for name, value in headers if name.lower() != "age"]
        meta = {"s": status, "h": kept, "t": time.time(), "l": fresh.lifetime_s}
        meta |= {"w": fresh.stale_s, "a": fresh.age_s}
        blob = json.dumps(meta, separators=(",", ":")).encode() + b"\n" + body
        entry_key = self._entry_key(key.base, names, request)
        await self.backend.set(
            [("v" + SEP + key.base, names.encode("latin-1")), (entry_key, blob)], ttl
        )

    def refresh_once(self, entry_key: str, refresh: Callable[[], Awaitable[None]]) -> None:
        """stale-while-revalidate: one background refresh per entry at a time, per node."""
        if entry_key in self.refreshing:
            return
        task = asyncio.get_running_loop().create_task(self._refresh(entry_key, refresh))
        self.refreshing[entry_key] = task

    async def _refresh(self, entry_key: str, refresh: Callable[[], Awaitable[None]]) -> None:
        try:
            await refresh()
        except Exception:  # a failed refresh leaves the stale entry; the next one retries
            log.exception("response cache: background refresh failed")
        finally:
            self.refreshing.pop(entry_key, None)

    async def purge(self, route: str | None, path: str | None) -> int:
        return await self.backend.purge(route, path)

    @staticmethod
    def _entry_key(base: str, names: str, request: dict[str, str]) -> str:
        values = "\x1e".join(request.get(name, "") for name in names.split(",")) if names else ""
        return "e" + SEP + base + SEP + values
