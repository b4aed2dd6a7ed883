"""WebSockets in the SDK: what a socket handler receives (`SocketEvent`) and how any
code with a bus pushes to one connection or a channel (`Sockets`).

    worker = Worker("chat")

    @worker.socket
    async def on_socket(event: SocketEvent, sockets: Sockets) -> str | None:
        if event.kind == "open":
            await sockets.join(event.connection_id, "lobby")
        elif event.kind == "message":
            await sockets.publish("lobby", event.text or "")
        return None  # or a str / bytes: sent back to this connection

The wire format is in contracts/websocket.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from contracts import websocket as ws
from contracts.codec import EnvelopeCodec
from contracts.envelope import HttpInfo
from contracts.topics import Topics
from workers.sdk.messages import EnvelopeView

if TYPE_CHECKING:
    from contracts.bus import Bus

Publish = Callable[[str, bytes], Awaitable[None]]
SocketKind = Literal["open", "message", "close"]
SocketReply = str | bytes | None
_KINDS: dict[str, SocketKind] = {ws.OPEN: "open", ws.MESSAGE: "message", ws.CLOSE: "close"}
MAX_CHANNEL = 256


@dataclass(slots=True)
class SocketEvent(EnvelopeView):
    """A connection opened, sent a message, or closed."""

    @property
    def kind(self) -> SocketKind:
        return _KINDS[self.envelope.type]

    @property
    def connection_id(self) -> str:
        return self.envelope.correlationid

    @property
    def data(self) -> bytes:
        return self.envelope.data

    @property
    def text(self) -> str | None:
        """The message of a text frame; None for a binary one."""
        if self.envelope.datacontenttype == ws.BINARY:
            return None
        return self.envelope.data.decode()

    @property
    def http(self) -> HttpInfo | None:
        """The handshake (path, query, headers, client) on `open`; None otherwise."""
        return self.envelope.http


SocketHandlerFn = Callable[[SocketEvent, "Sockets"], Awaitable[SocketReply]]


def _checked_channel(channel: str) -> str:
    if not channel or len(channel) > MAX_CHANNEL:
        raise ValueError(f"a channel name has 1 to {MAX_CHANNEL} characters, got {channel!r}")
    return channel


class Sockets:
    """Push to WebSocket connections through the bus; the node holding a socket
    delivers. Pushes are fire and forget: a connection that has gone is skipped."""

    def __init__(
        self, publish: Publish, topics: Topics, *, source: str, codec: EnvelopeCodec | None = None
    ) -> None:
        self._publish = publish
        self._topics = topics
        self._source = source
        self._codec = codec or EnvelopeCodec()

    @classmethod
    def on_bus(cls, bus: Bus, codec: EnvelopeCodec | None = None) -> Sockets:
        return cls(bus.publish, bus.topics, source=f"relaygate://worker/{bus.node_id}", codec=codec)

    async def send(self, connection: str, data: str | bytes) -> None:
        """One message to one connection (a str goes as a text frame)."""
        await self._to_node(ws.PUSH, connection, data=data)

    async def publish(self, channel: str, data: str | bytes) -> None:
        """One message to every connection in `channel`, on whichever node it is."""
        envelope = ws.control(
            ws.PUSH,
            "",
            source=self._source,
            subject=_checked_channel(channel),
            data=data.encode() if isinstance(data, str) else data,
            text=isinstance(data, str),
        )
        await self._publish(self._topics.ws_channels(), self._codec.encode(envelope))

    async def join(self, connection: str, channel: str) -> None:
        """Add `connection` to `channel`; later publishes to it reach the connection."""
        await self._to_node(ws.JOIN, connection, channel=_checked_channel(channel))

    async def leave(self, connection: str, channel: str) -> None:
        await self._to_node(ws.LEAVE, connection, channel=_checked_channel(channel))

    async def close(self, connection: str, code: int = 1000, reason: str = "") -> None:
        """Close the connection with `code` (1000, or 3000-4999 for your own meanings)."""
        if code != 1000 and not 3000 <= code <= 4999:
            raise ValueError(f"close code {code}: use 1000 or 3000-4999")
        await self._to_node(ws.DISCONNECT, connection, data=reason, code=code)

    async def _to_node(
        self,
        kind: str,
        connection: str,
        *,
        data: str | bytes = b"",
        channel: str | None = None,
        code: int | None = None,
    ) -> None:
        envelope = ws.control(
            kind,
            connection,
            source=self._source,
            subject=channel,
            data=data.encode() if isinstance(data, str) else data,
            text=isinstance(data, str),
            code=code,
        )
        await self._publish(ws.push_topic(self._topics, connection), self._codec.encode(envelope))
