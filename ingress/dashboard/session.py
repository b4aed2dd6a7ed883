"""Who may see the dashboard. A browser cannot send `Authorization` on a page load, so
the admin token is posted once to a login form and exchanged for a session cookie:
`v1.<expiry>.<nonce>.<HMAC-SHA256>`, keyed by a hash of the token. Nothing is stored
server-side; every ingress node with the same token accepts it, and changing the token
ends every session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

COOKIE = "relaygate_dashboard"
_VERSION = "v1"


class Sessions:
    """Issue and check session cookies for one admin token (None: the dashboard is
    open, like the admin API without a token)."""

    def __init__(self, token: str | None, ttl_s: int) -> None:
        self.token = token
        self.ttl_s = ttl_s
        self._bearer = f"Bearer {token}".encode() if token is not None else b""
        self._key = (
            hashlib.sha256(b"relaygate-dashboard-session\0" + token.encode()).digest()
            if token is not None
            else b""
        )

    @property
    def open(self) -> bool:
        return self.token is None

    def token_matches(self, sent: str) -> bool:
        return self.token is not None and hmac.compare_digest(sent.encode(), self.token.encode())

    def bearer_matches(self, header: bytes) -> bool:
        return self.token is not None and hmac.compare_digest(header, self._bearer)

    def issue(self, now: float | None = None) -> str:
        expiry = int((time.time() if now is None else now) + self.ttl_s)
        body = f"{_VERSION}.{expiry}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._sign(body)}"

    def valid(self, cookie: str, now: float | None = None) -> bool:
        if self.token is None:
            return True
        body, _, signature = cookie.rpartition(".")
        parts = body.split(".")
        if len(parts) != 3 or parts[0] != _VERSION or not parts[1].isdigit():
            return False
        if not hmac.compare_digest(signature, self._sign(body)):
            return False
        return int(parts[1]) > (time.time() if now is None else now)

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
