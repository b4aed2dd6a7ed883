"""The guarded protocol over TLS. The listener stays plain TCP and each admitted
connection puts the loop's own TLS protocol in front of itself, so that the
connection caps and the timeouts also hold during the handshake."""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from typing import Any, ClassVar

from ingress.transport.protocol import GuardedProtocol, peer_address
from ingress.transport.tls import connection_info

log = logging.getLogger("relaygate.ingress")


class TlsGuardedProtocol(GuardedProtocol):
    """HTTPS: the listener is plain TCP and each admitted connection puts the loop's own
    TLS layer in front of itself, so the connection caps count clients that never
    finish a handshake, and a handshake gets `header_timeout_s` (the loop's default is
    60 s). Each request's scope carries the ASGI TLS extension (the client
    certificate's subject, the TLS version)."""

    tls_context: ClassVar[ssl.SSLContext]
    _tls: dict[str, Any]
    _tls_layer: asyncio.BaseProtocol | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self._tls_layer is not None:  # again, from the TLS layer: the handshake is done
            self._tls = connection_info(transport)
            self._serve_http(transport)
            return
        self._address = peer_address(transport)
        if not self.guard.admit(self, self._address):
            transport.abort()  # no TLS spoken yet, so no 503: just the close
            return
        self._admitted = True
        # What loop.start_tls does, but synchronously: a coroutine would run a loop turn
        # later, and uvloop may hand the ClientHello to this HTTP parser meanwhile.
        waiter = self.loop.create_future()
        waiter.add_done_callback(self._handshake_done)
        layer = _tls_layer_class(self.loop)(
            self.loop,
            self,
            self.tls_context,
            waiter,
            server_side=True,
            ssl_handshake_timeout=self.guard.header_timeout,
        )
        self._tls_layer = layer
        transport.set_protocol(layer)
        layer.connection_made(transport)

    def _handshake_done(self, waiter: asyncio.Future[None]) -> None:
        failure = None if waiter.cancelled() else waiter.exception()
        if self.transport is None:  # failed, timed out, or the client left during it
            log.debug("TLS handshake with %s failed: %r", self._address, failure)
            self._release()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]


def _tls_layer_class(loop: asyncio.AbstractEventLoop) -> Any:
    """The TLS protocol of the running loop: uvloop's own (in C) under uvloop."""
    if type(loop).__module__.startswith("uvloop"):
        from uvloop.loop import SSLProtocol  # type: ignore[attr-defined]

        return SSLProtocol
    return sslproto.SSLProtocol
