"""Light WebSocket clients for the push benchmark: a plain asyncio protocol per socket
that does the RFC 6455 handshake, answers pings and closes, and notes the time each
text message arrives. A full client (websockets' asyncio one) spends tens of µs per
message on its own machinery (a reader task, futures, the sans-I/O parser); 10,000 of
them in one process took longer to read a push than the node took to send it, so the
figure measured the client. These cost about one callback and one parse per frame."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from collections.abc import Callable
from typing import cast

from websockets.http11 import USER_AGENT

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


class Arrivals:
    """The text messages all receivers got: how many, what, and when the first and the
    last came (`time.perf_counter`)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.messages: list[bytes] = []
        self.first = self.last = 0.0
        self.done = asyncio.get_running_loop().create_future()

    def add(self, message: bytes) -> None:
        self.last = time.perf_counter()
        if not self.messages:
            self.first = self.last
        self.messages.append(message)
        if len(self.messages) == self.expected and not self.done.done():
            self.done.set_result(None)


class Receiver(asyncio.Protocol):
    def __init__(self, host: str, path: str, arrivals: Arrivals) -> None:
        key = base64.b64encode(os.urandom(16))
        self._accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 (RFC 6455)
        # The very headers websockets' client sends (the node keeps them per socket:
        # memory per connection stays comparable); the server declines the extension.
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            f"User-Agent: {USER_AGENT}\r\n\r\n"
        ).encode()
        self._arrivals = arrivals
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self.opened = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {exc}"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self.opened.done():
            head, separator, buffer = buffer.partition(b"\r\n\r\n")
            if not separator:
                self._buffer = head
                return
            if not self._handshake(head):
                return
        while len(buffer) >= 2:
            opcode = buffer[0] & 0x0F
            length = buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, 2)
                start = 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, 2)
                start = 10
            end = start + length
            if len(buffer) < end:
                break
            self._frame(opcode, buffer[start:end])
            buffer = buffer[end:]
        self._buffer = buffer

    def _handshake(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        fields = (line.partition(b":") for line in lines[1:])
        headers = {name.strip().lower(): value.strip() for name, _, value in fields}
        accept = headers.get(b"sec-websocket-accept")
        if not lines[0].startswith(b"HTTP/1.1 101") or accept != self._accept:
            self.opened.set_exception(ConnectionError(f"handshake refused: {lines[0]!r}"))
            assert self._transport is not None
            self._transport.close()
            return False
        self.opened.set_result(None)
        return True

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == _TEXT:
            self._arrivals.add(payload)
        elif opcode == _PING:
            self._send(_PONG, payload)
        elif opcode == _CLOSE:
            self._send(_CLOSE, payload[:2])
            assert self._transport is not None
            self._transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        """A client frame: masked, as RFC 6455 requires (payloads here are < 126 bytes)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self._transport is not None
        self._transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._send(_CLOSE, struct.pack("!H", 1000))
            self._transport.close()


async def open_receivers(
    host: str, port: int, path: str, count: int, arrivals: Arrivals, concurrency: int = 200
) -> list[Receiver]:
    """`count` open sockets, at most `concurrency` handshakes at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    factory: Callable[[], Receiver] = lambda: Receiver(f"{host}:{port}", path, arrivals)  # noqa: E731

    async def open_one() -> Receiver:
        async with gate:
            _transport, receiver = await loop.create_connection(factory, host, port)
            await asyncio.wait_for(receiver.opened, 60)
            return receiver

    return list(await asyncio.gather(*(open_one() for _ in range(count))))
