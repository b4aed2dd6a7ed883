"""Turns request envelopes into reply envelopes around a handler, whatever carries them.

Decodes, skips envelopes whose deadline has passed, calls the handler, and makes
any handler failure a 500 problem reply: a caller never hangs on a worker bug.
WebSocket envelopes (`ws.open`, `ws.message`, `ws.close`) go to the socket handler;
what it returns is sent back to the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from contracts import websocket as ws
from contracts.codec import CodecError, EnvelopeCodec
from contracts.envelope import REQUEST, Envelope
from workers.sdk.messages import Request, Response
from workers.sdk.sockets import SocketEvent, SocketHandlerFn, Sockets

log = logging.getLogger("relaygate.worker")

HandlerFn = Callable[[Request], Awaitable[Response]]


@dataclass(slots=True, frozen=True)
class Reply:
    address: str
    correlation_id: str
    data: bytes


class EnvelopeProcessor:
    """`process(bytes) -> Reply | None`, plus counters a worker exposes."""

    def __init__(
        self,
        handler: HandlerFn | None,
        *,
        codec: EnvelopeCodec,
        source: str,
        on_socket: SocketHandlerFn | None = None,
        sockets: Sockets | None = None,
    ) -> None:
        self.handler = handler
        self.codec = codec
        self.source = source
        self.on_socket = on_socket
        # Set by the runtime once it can publish (it needs the broker's connection).
        self.sockets = sockets
        self.expired = 0
        self.failed = 0
        self.undecodable = 0

    async def process(self, data: bytes) -> Reply | None:
        try:
            envelope = self.codec.decode(data)
        except CodecError as exc:
            self.undecodable += 1
            log.warning("dropping undecodable message: %s", exc)
            return None
        if envelope.type in ws.TO_WORKER:
            await self._socket(envelope)
            return None
        if envelope.expired():
            # Nobody waits for this any more; doing the work would only add load.
            self.expired += 1
            return None
        try:
            if self.handler is None:
                response = Response.problem(
                    501,
                    "no-http-handler",
                    "Not implemented",
                    f"the worker of {envelope.subject or 'this route'} only serves WebSockets",
                    correlation_id=envelope.correlationid,
                )
            else:
                response = await self.handler(Request(envelope))
        except Exception as exc:
            self.failed += 1
            log.exception(
                "handler failed for %s (correlation id %s)",
                envelope.subject,
                envelope.correlationid,
            )
            response = Response.problem(
                500,
                "worker-error",
                "The worker failed",
                f"{type(exc).__name__} in the handler of {envelope.subject or 'this route'}",
                correlation_id=envelope.correlationid,
            )
        if envelope.type != REQUEST or not envelope.replyto:
            return None
        reply = envelope.reply(
            status=response.status, headers=response.headers, data=response.body, source=self.source
        )
        return Reply(envelope.replyto, envelope.correlationid, self.codec.encode(reply))

    async def _socket(self, envelope: Envelope) -> None:
        sockets = self.sockets
        if self.on_socket is None or sockets is None:
            self.undecodable += 1
            log.warning("no socket handler for %s on %s", envelope.type, envelope.subject)
            return
        try:
            answer = await self.on_socket(SocketEvent(envelope), sockets)
            if answer is not None and envelope.type != ws.CLOSE:
                await sockets.send(envelope.correlationid, answer)
        except Exception:
            self.failed += 1
            log.exception(
                "socket handler failed for %s (connection %s)",
                envelope.subject,
                envelope.correlationid,
            )
