"""One pipelined Redis connection for the rate limiter's hot call.

redis-py's asyncio client spends about 150 us of CPU per command here (connection pool,
retry wrapper, a lock, response callbacks), which the rate limiter pays once per batch
of decisions. This connection does what that call needs and no more: commands are
packed by hiredis and written at once, replies are parsed by hiredis's reader and
matched to their callers in order, so a round trip costs some 15 us. Everything else
(keys, caching, admin) stays on redis-py.

URLs are redis-py's: `redis://[[user]:password@]host[:port][/db]`, `rediss://` (TLS,
certificates checked against the system's CAs) and `unix://path[?db=N]`."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url


class RespError(Exception):
    """Redis answered with an error, or the connection failed or timed out."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while waiting:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(RespError(f"protocol error: {exc}"))
                return
            if reply is False:
                return
            future = waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RespError(f"connection lost: {exc}" if exc else "connection closed"))

    def fail(self, error: BaseException) -> None:
        self.lost = self.lost or error
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def close(self, error: BaseException) -> None:
        self.fail(error)
        if self.transport is not None:
            self.transport.close()


class RespPipe:
    """`await call(*args)` -> the reply (bytes, int, list, ...), or RespError. Connects on
    first use and again after a failure; a call that gets no reply within `timeout`
    closes the connection, so no later reply is taken for another's."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        options = parse_url(url)
        self._path: str | None = options.get("path")
        self._host: str = options.get("host", "localhost")
        self._port: int = int(options.get("port", 6379))
        self._tls = options.get("connection_class") is SSLConnection
        setup: list[tuple[Any, ...]] = []
        if options.get("password") is not None:
            user = options.get("username")
            auth = ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
            setup.append(auth)
        if int(options.get("db") or 0):
            setup.append(("SELECT", int(options["db"])))
        self._setup = setup
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            if self._path is not None:
                opened = loop.create_unix_connection(_Protocol, self._path)
            else:
                context = ssl.create_default_context() if self._tls else None
                opened = loop.create_connection(_Protocol, self._host, self._port, ssl=context)
            _, protocol = await asyncio.wait_for(opened, self.timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise RespError(f"cannot connect: {exc or type(exc).__name__}") from exc
        for command in self._setup:
            reply = await self._send(protocol, hiredis.pack_command(command))
            if isinstance(reply, hiredis.ReplyError):
                protocol.close(RespError(str(reply)))
                raise RespError(f"{command[0]} refused: {reply}")
        self._protocol = protocol
        return protocol

    async def _send(self, protocol: _Protocol, packed: bytes) -> Any:
        if protocol.lost is not None or protocol.transport is None:
            raise RespError(str(protocol.lost or "not connected"))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        protocol.waiting.append(future)
        protocol.transport.write(packed)
        # A timer, not asyncio.wait_for: this is the hot path, and wait_for costs more.
        timer = loop.call_later(self.timeout, self._expire, protocol, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, protocol: _Protocol, future: asyncio.Future[Any]) -> None:
        if not future.done():
            protocol.close(RespError(f"no reply within {self.timeout:g} s"))

    async def call(self, *args: Any) -> Any:
        """The reply; an error reply is raised as RespError."""
        protocol = await self._connection()
        reply = await self._send(protocol, hiredis.pack_command(args))
        if isinstance(reply, hiredis.ReplyError):
            raise RespError(str(reply))
        return reply

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close(RespError("closed"))
            self._protocol = None


class Script:
    """A Lua script run by EVALSHA, loaded (by EVAL) when Redis does not know it yet:
    after a restart or a SCRIPT FLUSH."""

    def __init__(self, pipe: RespPipe, source: str) -> None:
        self.pipe = pipe
        self.source = source
        # SHA-1 is how Redis names scripts, not a security measure here.
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.pipe.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.pipe.call("EVAL", self.source, len(keys), *keys, *args)
