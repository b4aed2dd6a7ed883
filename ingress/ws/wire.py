"""Pushes encoded once: a push carries its WebSocket frame as bytes, and a socket served
by uvicorn's sans-I/O implementation (the one ingress/server.py picks) gets those very
bytes on its transport, so a push to 10,000 sockets serializes one frame, not 10,000.

The bytes are what uvicorn's own send would write: a server frame is not masked and we
negotiate no extension (`ws_per_message_deflate=False`). A socket takes the direct write
only when uvicorn's send would write at once too (open, not closing, its transport not
paused); otherwise the push goes through the ASGI send, which knows how to wait."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from ingress.responses import Send

_OPEN = State.OPEN


@dataclass(slots=True, frozen=True)
class Push:
    """One message for one socket or many: the ASGI `websocket.send` event, and the same
    message as a frame on the wire."""

    message: dict[str, Any]
    wire: bytes


def text_push(text: str, data: bytes) -> Push:
    """`data` is `text` encoded as UTF-8 (the caller has both)."""
    return Push({"type": "websocket.send", "text": text}, _serialize(Opcode.TEXT, data))


def binary_push(data: bytes) -> Push:
    return Push({"type": "websocket.send", "bytes": data}, _serialize(Opcode.BINARY, data))


def _serialize(opcode: Opcode, data: bytes) -> bytes:
    return Frame(opcode, data).serialize(mask=False)


def direct_socket(send: Send) -> WebSocketsSansIOProtocol | None:
    """The uvicorn socket behind an ASGI `send`, if it can take pushes as frame bytes."""
    socket = getattr(send, "__self__", None)
    if type(socket) is not WebSocketsSansIOProtocol or socket.conn.extensions:
        return None
    return socket


def write_now(socket: WebSocketsSansIOProtocol, wire: bytes) -> bool:
    """Write `wire` if uvicorn's send would write without waiting; False: use the send."""
    if (
        socket.close_sent
        or socket.disconnected
        or not socket.writable.is_set()
        or socket.conn.state is not _OPEN
    ):
        return False
    socket.transport.write(wire)
    return True
