"""The rate limiter's lean Redis connection (ingress/state/resp.py) against a real
redis-server: pipelining order, authentication and database selection from the URL,
a script Redis has forgotten, an unresponsive server, and a restart."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from ingress.state.limiter import WindowLimit
from ingress.state.redis_limiter import RedisLimiter
from ingress.state.resp import RespError, RespPipe, Script
from tests.support.processes import RedisServer

pytestmark = pytest.mark.redis


async def test_pipelined_replies_reach_their_own_callers(redis_server: RedisServer) -> None:
    pipe = RespPipe(redis_server.url, timeout=2)
    try:
        replies = await asyncio.gather(*(pipe.call("ECHO", f"m{i}") for i in range(500)))
        assert replies == [f"m{i}".encode() for i in range(500)]
        with pytest.raises(RespError, match=r"wrong number of arguments"):
            await pipe.call("GET")
        assert await pipe.call("INCRBY", "n", 5) == 5  # the connection survives an error
    finally:
        pipe.close()


async def test_url_password_and_database_are_used(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, extra=("--requirepass", "s3cret")).start()
    try:
        base = f"127.0.0.1:{server.port}"
        good = RespPipe(f"redis://:s3cret@{base}/3", timeout=2)
        assert await good.call("SET", "where", "db3") == b"OK"
        info = (await good.call("CLIENT", "INFO")).decode()
        assert " db=3 " in info
        good.close()
        wrong = RespPipe(f"redis://:nope@{base}/0", timeout=2)
        with pytest.raises(RespError, match="AUTH refused"):
            await wrong.call("PING")
        anonymous = RespPipe(f"redis://{base}/0", timeout=2)
        with pytest.raises(RespError, match="NOAUTH"):
            await anonymous.call("GET", "where")
        anonymous.close()
    finally:
        server.stop()


async def test_a_flushed_script_is_loaded_again(redis_server: RedisServer) -> None:
    pipe = RespPipe(redis_server.url, timeout=2)
    script = Script(pipe, "return tonumber(ARGV[1]) + 1")
    try:
        assert await script([], [41]) == 42
        assert await pipe.call("SCRIPT", "FLUSH") == b"OK"
        assert await script([], [1]) == 2
        assert await pipe.call("SCRIPT", "EXISTS", script.sha) == [1]
    finally:
        pipe.close()


async def test_an_unresponsive_server_fails_calls_within_the_timeout(
    redis_server: RedisServer,
) -> None:
    pipe = RespPipe(redis_server.url, timeout=0.3)
    try:
        assert await pipe.call("PING") == b"PONG"
        redis_server.signal(signal.SIGSTOP)
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(
            *(pipe.call("PING") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RespError) for r in results), results
        assert loop.time() - started < 1.0
        redis_server.signal(signal.SIGCONT)
        # A new connection: the old one may still hold late replies for the failed calls.
        assert await pipe.call("ECHO", "fresh") == b"fresh"
    finally:
        redis_server.signal(signal.SIGCONT)
        pipe.close()


async def test_limiter_falls_back_while_redis_is_down_and_reconnects_after_a_restart(
    redis_server: RedisServer,
) -> None:
    limiter = RedisLimiter(redis_server.url, timeout_ms=300)
    limits = (WindowLimit(3, 60_000),)
    try:
        decisions = [await limiter.hit("caller", limits, ()) for _ in range(4)]
        assert [d.allowed for d in decisions if d is not None] == [True, True, True, False]
        redis_server.kill()
        assert await limiter.hit("caller", limits, ()) is None  # the caller's fallback applies
        assert not limiter.available
        restarted = RedisServer(redis_server.log_path.parent, port=redis_server.port).start()
        try:
            await asyncio.sleep(1.1)  # past the pause after a failed call
            decision = await limiter.hit("caller", limits, ())
            assert decision is not None
            assert decision.allowed  # a fresh Redis: an empty window
            assert limiter.available
        finally:
            restarted.stop()
    finally:
        await limiter.aclose()


async def test_a_batch_decides_in_arrival_order(redis_server: RedisServer) -> None:
    limiter = RedisLimiter(redis_server.url, timeout_ms=1000)
    limits = (WindowLimit(10, 60_000),)
    try:
        decisions = await asyncio.gather(*(limiter.hit("k", limits, ()) for _ in range(25)))
        allowed = [d.allowed for d in decisions if d is not None]
        assert allowed == [True] * 10 + [False] * 15
        used = [d.usage[0][0] for d in decisions if d is not None]
        assert used[:11] == list(range(11))
    finally:
        await limiter.aclose()
