"""The sockets one node holds, by connection id and by channel, and delivery to them.

A push is encoded once (ingress/ws/wire.py) and written as those bytes straight to each
socket that can take it now. Any other socket gets it through its ASGI send, run
eagerly: the first step of the send coroutine runs right away, and only a send that has
to wait (the client does not read, its transport is paused) goes on in a task of its
own. So a push to 10,000 sockets costs no coroutine or task per socket, and one slow
client delays only itself; once it has unsent pushes, later ones queue behind them (in
order), and past `MAX_QUEUED` they are dropped and counted rather than piled up in
memory. (Python 3.12's `eager_task_factory` would do the eager part; we support 3.11.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Generator
from types import CoroutineType
from typing import Any

from ingress.responses import Send
from ingress.ws.wire import Push, direct_socket, write_now

log = logging.getLogger("relaygate.ingress.ws")

MAX_QUEUED = 256


class Connection:
    __slots__ = ("channels", "closing", "id", "queued", "route", "send", "socket")

    def __init__(self, connection_id: str, route: str, send: Send) -> None:
        self.id = connection_id
        self.route = route
        self.send = send
        self.socket = direct_socket(send)  # None: every push goes through `send`
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

    def deliver(self, connection: Connection, push: Push) -> None:
        if connection.closing:
            return
        queued = connection.queued
        if not queued:
            socket = connection.socket
            if socket is not None and write_now(socket, push.wire):
                self.pushed += 1
                return
        elif queued >= MAX_QUEUED:
            self.dropped += 1
            return
        send = connection.send(push.message)
        if queued or not isinstance(send, CoroutineType):
            # Earlier pushes wait: this one waits behind them, in order.
            self._spawn(connection, self._send(send))
            return
        try:
            waiting = send.send(None)
        except StopIteration:
            self.pushed += 1
            return
        except (OSError, RuntimeError):  # the client left meanwhile (uvicorn raises these)
            self.dropped += 1
            return
        self._spawn(connection, self._send(_Resumed(send, waiting)))

    def _spawn(self, connection: Connection, send: Coroutine[Any, Any, None]) -> None:
        connection.queued += 1
        task = asyncio.get_running_loop().create_task(send)
        task.add_done_callback(lambda _: _sent(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def broadcast(self, channel: str, push: Push) -> int:
        """Deliver to every member of `channel` here; how many there are."""
        members = self.channels.get(channel)
        if not members:
            return 0
        deliver = self.deliver
        for connection in members:
            deliver(connection, push)
        return len(members)

    async def _send(self, send: Awaitable[None]) -> None:
        try:
            await send
            self.pushed += 1
        except (OSError, RuntimeError):  # the client left meanwhile (uvicorn raises these)
            self.dropped += 1

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


def _sent(connection: Connection) -> None:
    connection.queued -= 1


class _Resumed:
    """The rest of a send coroutine that suspended on `waiting` (a future) in its first
    step: awaiting this waits for that future, then runs the coroutine to its end."""

    __slots__ = ("send", "waiting")

    def __init__(self, send: Coroutine[Any, Any, None], waiting: Any) -> None:
        self.send = send
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        try:
            yield self.waiting  # the task waits on it, as the coroutine itself would have
        except BaseException:
            self.send.close()
            raise
        yield from self.send.__await__()
