"""A lane: requests the data plane answers without the ASGI request cycle.

uvicorn's cycle (scope, an `asyncio.Event`, `receive`, `send` with its per-header
checks, head and body written apart) costs about as much CPU as the whole of a durable
event intake's own work. A lane claims a request when its head is complete
(`Lane.claims`), gets its body from the parser callbacks and writes its response with
one `transport.write`. Everything else is the connection's as before: keep-alive,
pipelining (a claimed request waits its turn in uvicorn's queue like any other),
flow control, the guard's slow-client timeouts, shutdown.

`LaneCycle` stands in for uvicorn's `RequestResponseCycle`: the protocol only reads and
writes the attributes named in its slots, calls `message_event.set()` and starts
`run_asgi(app)` as the request's task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE

if TYPE_CHECKING:
    from ingress.transport.protocol import GuardedProtocol

log = logging.getLogger("relaygate.ingress")

Headers = list[tuple[bytes, bytes]]

_CLOSE = b"connection: close\r\n"


class Disconnected(Exception):
    """The client went away (or its connection was closed) before its body was complete."""


class BodyTooLarge(Exception):
    """The body is above the caller's limit (declared or read so far)."""


class Lane(Protocol):
    def claims(self, method: bytes, url: bytes) -> bool:
        """Whether this lane answers the request (origin-form `url`, raw)."""

    async def serve(self, cycle: LaneCycle) -> None:
        """Answer the request: `cycle.respond` once (not at all if it disconnected)."""


class LaneCycle:
    """One claimed request: its head and body as the parser gave them, and the writer
    of its one response."""

    __slots__ = (
        "_protocol",
        "_waiter",
        "body",
        "disconnected",
        "headers",
        "keep_alive",
        "lane",
        "more_body",
        "on_response",
        "response_complete",
        "scope",
    )

    def __init__(self, protocol: GuardedProtocol, lane: Lane, keep_alive: bool) -> None:
        self._protocol = protocol
        self._waiter: asyncio.Future[None] | None = None
        self.lane = lane
        # uvicorn's scope for this request, completed as its own head callback would.
        scope: dict[str, Any] = protocol.scope  # type: ignore[assignment]
        parser = protocol.parser
        scope["method"] = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        if version != "1.1":
            scope["http_version"] = version
        raw_path, _, query = protocol.url.partition(b"?")
        scope["raw_path"] = raw_path
        scope["path"] = raw_path.decode("latin-1")
        scope["query_string"] = query
        self.scope = scope
        self.headers: Headers = protocol.headers
        self.keep_alive = keep_alive
        self.body = bytearray()
        self.more_body = True
        self.response_complete = False
        self.disconnected = False
        self.on_response: Callable[[], None] = protocol.on_response_complete

    # -- what uvicorn's protocol calls --------------------------------------------------

    @property
    def message_event(self) -> LaneCycle:
        return self  # `message_event.set()`: more body, the end of it, or a disconnect

    def set(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run_asgi(self, app: Any) -> None:  # the name uvicorn's task starter calls
        try:
            await self.lane.serve(self)
        except Exception:
            log.exception("unexpected error answering %s", self.scope.get("raw_path", b"?"))
            if not self.response_complete and not self.disconnected:
                self.respond(
                    500,
                    [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")],
                    b"Internal Server Error",
                    close=True,
                )
            else:
                self._protocol.transport.close()
        finally:
            self.on_response = _nothing

    # -- what the lane calls ------------------------------------------------------------

    async def read_body(self, limit: int) -> bytes:
        """The whole body: `BodyTooLarge` above `limit` bytes, `Disconnected` if cut."""
        while self.more_body and not self.disconnected:
            if len(self.body) > limit:
                raise BodyTooLarge
            self._protocol.flow.resume_reading()  # paused above uvicorn's high-water mark
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        if self.disconnected:
            raise Disconnected
        if len(self.body) > limit:
            raise BodyTooLarge
        return bytes(self.body)

    async def writable(self) -> None:
        """Wait while the connection's write buffer is above its high-water mark."""
        flow = self._protocol.flow
        if flow.write_paused and not self.disconnected:
            await flow.drain()

    def respond(
        self,
        status: int,
        headers: Headers,
        body: bytes,
        extra: Headers | None = None,
        *,
        close: bool = False,
    ) -> None:
        """Write the response in one piece. `headers` are the lane's own, with the
        content-length; `extra` ones (from policies and config) are checked as uvicorn
        checks an app's, so that a CR or LF in a value never splits the response. The
        server's own (date) are added."""
        if self.response_complete:
            raise RuntimeError("the response was already sent")
        self.response_complete = True
        protocol = self._protocol
        if self.disconnected:
            self.on_response()
            return
        parts = [STATUS_LINE[status]]
        for name, value in (*protocol.server_state.default_headers, *headers):
            parts += (name, b": ", value, b"\r\n")
        if extra:
            for name, value in extra:
                if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
                    raise RuntimeError(f"invalid response header {name!r}")
                parts += (name, b": ", value, b"\r\n")
        if close:
            self.keep_alive = False
        if not self.keep_alive:
            parts.append(_CLOSE)
        parts += (b"\r\n", body)
        transport = protocol.transport
        transport.write(b"".join(parts))
        if not self.keep_alive:
            transport.close()
        self.on_response()


def _nothing() -> None:
    pass
