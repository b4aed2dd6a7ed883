"""The rate-limit decision as one Lua script in Redis: atomic, and timed by Redis's own
clock, so any number of ingress nodes share exact counters (see limiter.py for why a
sliding-window log)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

from ingress.state.limiter import Decision, QuotaLimit, WindowLimit
from ingress.state.resp import RespError, RespPipe, Script

log = logging.getLogger("relaygate.ratelimit")

# One call decides a batch of requests, in order, atomically. Per decision, ARGV holds:
# member, #limits, #quotas, then (requests, window_ms) per limit and (requests, ttl_ms)
# per quota; its KEYS follow in the same order (sorted sets, then quota counters).
# Returns per decision: allowed (0/1), retry_after_ms, then (used, reset_ms) per limit
# and quota.
_DECIDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
-- Per sorted set touched in this call: {count, oldest score, expiry set}. `now` is the
-- same for the whole call, so a set is trimmed, counted and given its expiry once, and
-- a batch of one caller's requests costs a ZADD each after the first.
local sets = {}
local a, k = 1, 1
while a <= #ARGV do
  local member, nlimits, nquotas = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local allowed, retry, usage, windows, ttls, states = 1, 0, {}, {}, {}, {}
  for i = 1, nlimits do
    local key, limit, window = KEYS[k + i - 1], tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    a = a + 2
    windows[i] = window
    local set = sets[key]
    if set == nil then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
      local count, oldest = redis.call('ZCARD', key), now
      if count > 0 then
        oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
      end
      set = {count, oldest, false}
      sets[key] = set
    end
    states[i] = set
    local count = set[1]
    local reset = window
    if count > 0 then
      reset = set[2] + window - now
    end
    if count >= limit then
      allowed = 0
      local nth = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
      retry = math.max(retry, tonumber(nth[2]) + window - now)
    end
    usage[#usage + 1] = count
    usage[#usage + 1] = reset
  end
  for q = 1, nquotas do
    local key, limit, ttl = KEYS[k + nlimits + q - 1], tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    a = a + 2
    ttls[q] = ttl
    local used = tonumber(redis.call('GET', key) or '0')
    if used >= limit then
      allowed = 0
      retry = math.max(retry, ttl)
    end
    usage[#usage + 1] = used
    usage[#usage + 1] = ttl
  end
  if allowed == 1 then
    for i = 1, nlimits do
      local key, set = KEYS[k + i - 1], states[i]
      redis.call('ZADD', key, now, member)
      if set[1] == 0 then
        set[2] = now
      end
      set[1] = set[1] + 1
      if not set[3] then
        redis.call('PEXPIRE', key, windows[i])
        set[3] = true
      end
    end
    for q = 1, nquotas do
      local key = KEYS[k + nlimits + q - 1]
      if redis.call('INCR', key) == 1 then
        redis.call('PEXPIRE', key, ttls[q] + 3600000)
      end
    end
  end
  k = k + nlimits + nquotas
  out[#out + 1] = allowed
  out[#out + 1] = retry
  out[#out + 1] = usage
end
return out
"""

MAX_BATCH = 256
RETRY_DOWN_S = 1.0
_PLANS_MAX = 10_000  # cached key plans: callers seen recently


def _hash_tag(key: str) -> str:
    """The caller's key as a Redis hash tag: its keys hash alike, braces inside escaped."""
    return "{" + key.replace("{", "(").replace("}", ")") + "}"


@dataclass(slots=True)
class _Pending:
    keys: list[str]
    args: list[int | str]
    future: asyncio.Future[Decision | None]


class RedisLimiter:
    """`await hit(...)` -> Decision, or None while Redis is unreachable (the caller then
    applies its `on_store_error`). One warning per outage, one line when it is back.

    Decisions that arrive while a call is in flight wait for it and then go together in
    the next call, so one round trip serves a batch. The script still decides each
    request in arrival order, atomically. The call goes over a lean pipelined connection
    of its own (ingress/state/resp.py): with redis-py's client a round trip cost about
    150 us of CPU. (A batch mixes callers' keys, so it needs one Redis, not a Redis
    Cluster.) `redis` is the redis-py client for everything else in the state store."""

    def __init__(self, url: str, *, timeout_ms: int, prefix: str = "rg") -> None:
        timeout = timeout_ms / 1000
        self.redis: Redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.url = url
        self.prefix = prefix
        self._pipe = RespPipe(url, timeout=timeout)
        self._script = Script(self._pipe, _DECIDE)
        self._down_until = 0.0
        self._outage = False
        # Sorted-set members must be unique per admitted request across nodes and restarts.
        self._member = uuid.uuid4().hex[:16] + "."
        self._seq = 0
        self._plans: dict[tuple[str, tuple[WindowLimit, ...]], tuple[list[str], list[int]]] = {}
        self._queue: list[_Pending] = []
        # The one flush in flight: what arrives meanwhile goes in its next batch. (Two
        # flushes at once measured the same on bench row (r).)
        self._flusher: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return not self._outage

    def _plan(self, key: str, limits: tuple[WindowLimit, ...]) -> tuple[list[str], list[int]]:
        """The sorted-set keys and the (requests, window_ms) arguments of a caller's limits."""
        tag = _hash_tag(key)
        keys = [f"{self.prefix}:rl:{tag}:{i}:{lim.window_ms}" for i, lim in enumerate(limits)]
        args = [n for lim in limits for n in (lim.requests, lim.window_ms)]
        if len(self._plans) >= _PLANS_MAX:
            self._plans.clear()
        self._plans[key, limits] = (keys, args)
        return keys, args

    async def hit(
        self, key: str, limits: tuple[WindowLimit, ...], quotas: tuple[QuotaLimit, ...]
    ) -> Decision | None:
        if self._down_until and time.monotonic() < self._down_until:
            return None  # don't pay a failed round trip per request during an outage
        keys, limit_args = self._plans.get((key, limits)) or self._plan(key, limits)
        self._seq += 1
        args: list[int | str] = [self._member + str(self._seq), len(limits), len(quotas)]
        args += limit_args
        if quotas:
            tag = _hash_tag(key)
            keys = keys + [f"{self.prefix}:q:{tag}:{q.period}" for q in quotas]
            for q in quotas:
                args += [q.requests, q.ttl_ms]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Decision | None] = loop.create_future()
        self._queue.append(_Pending(keys, args, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                decisions = await self._decide(batch)
                for pending, decision in zip(batch, decisions, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(decision)
        finally:
            self._flusher = None

    async def _decide(self, batch: list[_Pending]) -> list[Decision | None]:
        keys = [key for pending in batch for key in pending.keys]
        args = [arg for pending in batch for arg in pending.args]
        try:
            raw = await self._script(keys, args)
        except RespError as exc:
            self._down_until = time.monotonic() + RETRY_DOWN_S
            if not self._outage:
                self._outage = True
                log.warning(
                    "redis %s unreachable (%s): rate limits use their fallback until it is back",
                    self.url,
                    exc,
                )
            return [None] * len(batch)
        self._down_until = 0.0
        if self._outage:
            self._outage = False
            log.warning("redis %s is back: rate limits are shared again", self.url)
        decisions: list[Decision | None] = []
        for i in range(0, len(raw), 3):
            usage = raw[i + 2]
            decisions.append(
                Decision(raw[i] == 1, raw[i + 1], list(zip(usage[::2], usage[1::2], strict=True)))
            )
        return decisions

    async def aclose(self) -> None:
        self._pipe.close()
        await self.redis.aclose()
