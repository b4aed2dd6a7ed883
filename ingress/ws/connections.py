"""The sockets one node holds, by connection id and by channel, and delivery to them.

A push is sent in a task of its own per connection, so one client that does not read
(its transport paused) delays only itself; past `MAX_QUEUED` unsent pushes, further
ones to it are dropped and counted rather than piled up in memory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("relaygate.ingress.ws")

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Frame = dict[str, Any]  # an ASGI `websocket.send` message, shared by every recipient

MAX_QUEUED = 256


class Connection:
    __slots__ = ("channels", "closing", "id", "queued", "route", "send")

    def __init__(self, connection_id: str, route: str, send: Send) -> None:
        self.id = connection_id
        self.route = route
        self.send = send
        self.channels: set[str] = set()
        self.queued = 0
        self.closing = False


class Connections:
    """Registry and delivery; `dropped` counts pushes a slow client did not get."""

    def __init__(self) -> None:
        self.by_id: dict[str, Connection] = {}
        self.channels: dict[str, set[Connection]] = {}
        self.pushed = 0
        self.dropped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.by_id)

    def add(self, connection: Connection) -> None:
        self.by_id[connection.id] = connection

    def remove(self, connection: Connection) -> None:
        self.by_id.pop(connection.id, None)
        for channel in connection.channels:
            members = self.channels.get(channel)
            if members is not None:
                members.discard(connection)
                if not members:
                    del self.channels[channel]
        connection.channels.clear()

    def join(self, connection: Connection, channel: str) -> None:
        if connection.closing:
            return
        connection.channels.add(channel)
        self.channels.setdefault(channel, set()).add(connection)

    def leave(self, connection: Connection, channel: str) -> None:
        connection.channels.discard(channel)
        members = self.channels.get(channel)
        if members is not None:
            members.discard(connection)
            if not members:
                del self.channels[channel]

    def deliver(self, connection: Connection, frame: Frame) -> None:
        if connection.closing:
            return
        if connection.queued >= MAX_QUEUED:
            self.dropped += 1
            return
        connection.queued += 1
        task = asyncio.get_running_loop().create_task(self._send(connection, frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def broadcast(self, channel: str, frame: Frame) -> int:
        """Deliver to every member of `channel` here; how many there are."""
        members = self.channels.get(channel)
        if not members:
            return 0
        for connection in members:
            self.deliver(connection, frame)
        return len(members)

    async def _send(self, connection: Connection, frame: Frame) -> None:
        try:
            await connection.send(frame)
            self.pushed += 1
        except (OSError, RuntimeError):  # the client left meanwhile (uvicorn raises these)
            self.dropped += 1
        finally:
            connection.queued -= 1

    async def close_all(self, code: int, reason: str, timeout: float) -> None:
        """Close every socket (shutdown: 1001) and wait up to `timeout` for the sends."""
        frame = {"type": "websocket.close", "code": code, "reason": reason}
        sends = []
        for connection in list(self.by_id.values()):
            connection.closing = True
            sends.append(asyncio.ensure_future(connection.send(frame)))
        if sends:
            done, pending = await asyncio.wait(sends, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.debug("closing a socket: %s", task.exception())
