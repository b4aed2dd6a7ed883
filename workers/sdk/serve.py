"""Turns request envelopes into reply envelopes around a handler, whatever carries them.

Decodes, skips envelopes whose deadline has passed, calls the handler, and makes
any handler failure a 500 problem reply: a caller never hangs on a worker bug.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from contracts.codec import CodecError, EnvelopeCodec
from contracts.envelope import REQUEST
from workers.sdk.messages import Request, Response

log = logging.getLogger("relaygate.worker")

HandlerFn = Callable[[Request], Awaitable[Response]]


@dataclass(slots=True, frozen=True)
class Reply:
    address: str
    correlation_id: str
    data: bytes


class EnvelopeProcessor:
    """`process(bytes) -> Reply | None`, plus counters a worker exposes."""

    def __init__(self, handler: HandlerFn, *, codec: EnvelopeCodec, source: str) -> None:
        self.handler = handler
        self.codec = codec
        self.source = source
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
        if envelope.expired():
            # Nobody waits for this any more; doing the work would only add load.
            self.expired += 1
            return None
        try:
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
