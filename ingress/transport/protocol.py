"""uvicorn's httptools protocol with the checks an edge needs before a request reaches the
app: connection caps, header/URL limits, slow-client timeouts, and the framing rules
llhttp leaves to the server (one Host, chunked as the only transfer coding, HTTP/1.x
only, no absolute-form that disagrees with Host). A refusal is answered with a problem
and the connection closed: after a framing error the byte stream cannot be trusted."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from contracts import problems
from contracts.envelope import new_id
from ingress.transport.guard import ConnectionGuard
from ingress.transport.lane import Lane, LaneCycle

log = logging.getLogger("relaygate.ingress")

# After a refusal the connection is closed in stages (RFC 9112 section 9.6): our FIN
# first, then what the client still sends is read and dropped, for at most this long
# and this much. Closing at once would answer the client's next bytes with a reset,
# and a reset makes its TCP stack discard the refusal it has not read yet.
LINGER_S = 1.0
LINGER_BYTES = 64 * 1024

_WATCHED = frozenset({b"host", b"transfer-encoding", b"expect"})


class _Refusal(Exception):
    """Raised inside a parser callback: httptools stops parsing and `data_received`
    answers with the response prepared by `_refuse`."""


def problem_response(status: int, slug: str, title: str, detail: str) -> bytes:
    """A whole HTTP/1.1 problem response that closes the connection."""
    cid = new_id()
    body = problems.problem(status, slug, title, detail, correlation_id=cid)
    reason = _REASONS.get(status, b"Error")
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-correlation-id: %s\r\n" % cid.encode(),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}


class GuardedProtocol(HttpToolsProtocol):
    """One client connection. Build a subclass per listener with `protocol_class`."""

    guard: ClassVar[ConnectionGuard]
    max_header_count: ClassVar[int]
    max_header_bytes: ClassVar[int]
    max_url_bytes: ClassVar[int]
    max_head_read: ClassVar[int]  # bytes read while in a request head: a memory bound
    lane: ClassVar[Lane | None] = None  # answers the requests it claims without ASGI

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_since: float | None = None
        self.body_since: float | None = None
        self._address: str | None = None
        self._admitted = False
        self._refusal: bytes | None = None
        self._field_bytes = 0
        self._head_read = 0
        self._hosts = 0
        self._host = b""
        self._chunked = False
        self._lingering: int | None = None  # bytes still taken after a refusal
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self._admit(transport):
            self._serve_http(transport)

    def _admit(self, transport: asyncio.Transport) -> bool:
        """Count the connection in, or refuse it with a 503 (False)."""
        self._address = peer_address(transport)
        if self.guard.admit(self, self._address):
            self._admitted = True
            return True
        transport.write(
            problem_response(
                503,
                "too-many-connections",
                "Too many connections",
                "the gateway is at its connection limit for this client or in total",
            )
        )
        transport.close()
        return False

    def _serve_http(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self.head_since = self.guard.now

    def _release(self) -> None:
        if self._admitted:
            self._admitted = False
            self.guard.release(self, self._address)

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_since = self.body_since = None
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self._release()
        if self.transport is not None:  # refused ones, and failed handshakes, never served
            super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the transport over and gets its connection_lost:
        # give the slot back now rather than never.
        self.head_since = self.body_since = None
        self._release()
        super().handle_websocket_upgrade()

    def timed_out(self, phase: str) -> None:
        """Called by the guard's sweep: the client took too long to send `phase`."""
        transport = self.transport
        self.head_since = self.body_since = None  # once: the close takes a loop turn
        if transport.is_closing():
            return
        log.debug("client %s too slow sending the request %s; closing", self.client, phase)
        if phase == "headers" and (self.cycle is None or self.cycle.response_complete):
            transport.write(
                problem_response(
                    408,
                    "request-timeout",
                    "Request timeout",
                    f"the request headers did not arrive within {self.guard.header_timeout:g} s",
                )
            )
            self._linger(transport)
            return
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            self._lingering -= len(data)
            if self._lingering <= 0:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            refusal, self._refusal = self._refusal, None
            if refusal is None:
                log.debug("malformed request from %s: %s", self.client, exc)
                refusal = problem_response(
                    400, "bad-request", "Malformed HTTP request", f"cannot parse it: {exc}"
                )
            self._close_with(refusal)
            return
        if self.head_since is not None:  # still inside a request head after this read
            self._head_read += len(data)
            if self._head_read > self.max_head_read and not self.transport.is_closing():
                self._close_with(
                    problem_response(
                        431,
                        "headers-too-large",
                        "Request header fields too large",
                        f"the request head is above {self.max_head_read} bytes",
                    )
                )

    def send_400_response(self, msg: str) -> None:
        self._close_with(problem_response(400, "bad-request", "Malformed HTTP request", msg))

    def _close_with(self, response: bytes) -> None:
        self.head_since = self.body_since = None
        self.transport.write(response)
        self._linger(self.transport)

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close after a refusal was written, in stages (see LINGER_S)."""
        if transport.is_closing() or self._lingering is not None:
            return
        if not transport.can_write_eof():  # TLS: no half-close
            transport.close()
            return
        transport.write_eof()
        self._lingering = LINGER_BYTES
        self._linger_timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def _refuse(self, status: int, slug: str, title: str, detail: str) -> None:
        self._refusal = problem_response(status, slug, title, detail)
        raise _Refusal(detail)

    # -- parser callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_since is None:
            self.head_since = self.guard.now
        self._field_bytes = self._head_read = self._hosts = 0
        self._chunked = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.max_url_bytes:
            self._refuse(
                414,
                "uri-too-long",
                "Request target too long",
                f"the request target is above {self.max_url_bytes} bytes",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted here, judged once the head is complete: until then `data_received`
        # bounds what a connection can make the parser buffer.
        self._field_bytes += len(name) + len(value)
        name = name.lower()
        # llhttp keeps trailing whitespace, which RFC 9110 §5.5 excludes from the value.
        value = value.rstrip(b" \t")
        if name in _WATCHED:
            if name == b"host":  # in every request: no call for it
                self._hosts += 1
                self._host = value
            else:
                self._watched(name, value)
        self.headers.append((name, value))

    def _watched(self, name: bytes, value: bytes) -> None:
        if name == b"transfer-encoding":
            # llhttp accepts `gzip, chunked` and would hand us still-encoded bytes.
            if value.lower() != b"chunked":
                self._refuse(
                    501,
                    "unsupported-transfer-coding",
                    "Transfer coding not supported",
                    "only Transfer-Encoding: chunked is accepted",
                )
            self._chunked = True
        elif value.lower() == b"100-continue":
            self.expect_100_continue = True

    def on_headers_complete(self) -> None:
        self.head_since = None
        version = self.parser.get_http_version()
        if version != "1.1" or self._hosts != 1 or self._chunked or self.url[:1] != b"/":
            self._check_head(version)
        if self._field_bytes > self.max_header_bytes or len(self.headers) > self.max_header_count:
            self._refuse(
                431,
                "headers-too-large",
                "Request header fields too large",
                f"at most {self.max_header_count} header fields and "
                f"{self.max_header_bytes} bytes of them",
            )
        self.body_since = self.guard.now
        lane = self.lane
        if (
            lane is not None
            and not self.expect_100_continue
            and lane.claims(self.parser.get_method(), self.url)
            and not self.parser.should_upgrade()
        ):
            self._start_lane(lane)
            return
        super().on_headers_complete()

    def _start_lane(self, lane: Lane) -> None:
        """What uvicorn does for an ASGI request, with a `LaneCycle`: run it now, or
        after the requests pipelined before it."""
        keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0"
        existing = self.cycle
        cycle = LaneCycle(self, lane, keep_alive)
        self.cycle = cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]
        else:
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]

    def _check_head(self, version: str) -> None:
        """The uncommon heads, checked off the fast path (RFC 9112 §3.2, §6.1)."""
        if version not in ("1.1", "1.0"):
            self._refuse(
                505, "http-version", "HTTP version not supported", f"HTTP/{version} is not served"
            )
        if self._hosts > 1 or (self._hosts == 0 and version == "1.1"):
            self._refuse(
                400, "bad-host", "Bad Host header", "an HTTP/1.1 request needs exactly one Host"
            )
        if self._chunked and version == "1.0":
            self._refuse(
                400,
                "bad-framing",
                "Bad message framing",
                "Transfer-Encoding is not defined for HTTP/1.0",
            )
        url = self.url
        if url[:1] == b"/" or (url == b"*" and self.parser.get_method() == b"OPTIONS"):
            return
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            parsed = None
        authority = b""
        if parsed is not None and parsed.schema in (b"http", b"https") and parsed.host:
            authority = parsed.host.lower()
            if parsed.port is not None:
                authority += b":%d" % parsed.port
        if not authority or authority != self._host.lower():
            self._refuse(
                400,
                "bad-request-target",
                "Bad request target",
                "the request target must be a path, or an absolute URL naming the Host",
            )

    def on_body(self, body: bytes) -> None:
        self.body_since = self.guard.now
        super().on_body(body)

    @property
    def reading_body(self) -> bool:
        """Whether the request still has body to come (asked by the sweep, not per request)."""
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not self.transport.is_closing()


def peer_address(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return peer[0] if isinstance(peer, tuple) and peer else None
