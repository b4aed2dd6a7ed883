"""Below the ASGI app: the HTTP/1.1 connections of the data plane. TLS termination with
certificate reload, an HTTP-to-HTTPS redirect listener, connection caps, request
head limits and smuggling-safe framing, slow-client timeouts; and the JSON depth
limit the app applies to bodies."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, cast

from contracts.config import IngressConfig
from ingress.request import client_subject
from ingress.transport.guard import ConnectionGuard
from ingress.transport.https import TlsGuardedProtocol
from ingress.transport.json_depth import check_json_depth
from ingress.transport.lane import Lane
from ingress.transport.protocol import GuardedProtocol
from ingress.transport.redirect import HttpsRedirect
from ingress.transport.tls import (
    CertificateReloader,
    mtls_principal,
    server_context,
)

__all__ = ["HttpsRedirect", "Transport", "check_json_depth", "client_subject", "mtls_principal"]


class Transport:
    """What one ingress node listens with, built from `ingress:` once at start (a reload
    does not change it). `start` and `close` run the connection sweep and the
    certificate reloader on the serving loop."""

    def __init__(self, ingress: IngressConfig) -> None:
        self.ingress = ingress
        tls = ingress.tls
        self.guard = ConnectionGuard(ingress.limits)
        self.tls_context: ssl.SSLContext | None = None
        self.reloader: CertificateReloader | None = None
        self.redirect_guard: ConnectionGuard | None = None
        self.redirect_protocol: type[GuardedProtocol] | None = None
        if tls is not None:
            self.tls_context = server_context(tls)  # a bad file stops the node here
            self.reloader = CertificateReloader(self.tls_context, tls)
            if tls.redirect_port is not None:
                self.redirect_guard = ConnectionGuard(ingress.limits)
                self.redirect_protocol = protocol_class(self.redirect_guard)
        # The protocol speaks TLS itself: uvicorn's listener stays plain TCP.
        self.protocol: type[GuardedProtocol] = protocol_class(self.guard, tls=self.tls_context)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_context is not None else "http"

    def redirect_app(self) -> HttpsRedirect:
        tls = self.ingress.tls
        assert tls is not None
        return HttpsRedirect(tls.public_port or self.ingress.port)

    def use_lane(self, lane: Lane) -> None:
        """Let `lane` answer the data plane's requests it claims (not the redirect's)."""
        self.protocol.lane = lane

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.guard.start(loop)
        if self.redirect_guard is not None:
            self.redirect_guard.start(loop)
        if self.reloader is not None:
            self.reloader.start(loop)

    def close(self) -> None:
        self.guard.close()
        if self.redirect_guard is not None:
            self.redirect_guard.close()
        if self.reloader is not None:
            self.reloader.close()


def protocol_class(
    guard: ConnectionGuard, *, tls: ssl.SSLContext | None = None
) -> type[GuardedProtocol]:
    """The protocol of one listener, bound to its guard and limits (and TLS context)."""
    limits = guard.limits
    attributes: dict[str, Any] = {
        "guard": guard,
        "max_header_count": limits.max_header_count,
        "max_header_bytes": limits.max_header_bytes,
        "max_url_bytes": limits.max_url_bytes,
        "max_head_read": 2 * (limits.max_header_bytes + limits.max_url_bytes) + 64 * 1024,
    }
    base: type[GuardedProtocol] = GuardedProtocol
    if tls is not None:
        base = TlsGuardedProtocol
        attributes["tls_context"] = tls
    return cast("type[GuardedProtocol]", type(base.__name__, (base,), attributes))
