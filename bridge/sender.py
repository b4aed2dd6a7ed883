"""One signed delivery attempt over HTTP: Standard Webhooks headers, no redirects,
every connection through the SSRF guard, only the first bytes of the answer read."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from bridge.model import Endpoint
from bridge.signing import signature_header
from bridge.ssrf import AddressPolicy, GuardedResolver, UnsafeUrl, literal_address

SNIPPET_BYTES = 512
USER_AGENT = "relaygate-webhooks/0.1"


@dataclass(slots=True, frozen=True)
class Outcome:
    status: int | None
    latency_ms: float
    error: str | None = None
    response: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender:
    def __init__(self, policy: AddressPolicy, timeout_s: float) -> None:
        self._policy = policy
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._policy), limit=0, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self, endpoint: Endpoint, msg_id: str, body: bytes, *, content_type: str
    ) -> Outcome:
        assert self._session is not None, "Sender.start() first"
        started = time.perf_counter()
        try:
            # aiohttp skips the resolver for address literals: check those here.
            literal = literal_address(urlsplit(endpoint.url).hostname or "")
            if literal is not None:
                self._policy.check(literal)
        except UnsafeUrl as exc:
            return Outcome(None, 0.0, f"refused: {exc}")
        timestamp = int(time.time())
        headers = {
            "user-agent": USER_AGENT,
            **{name.lower(): value for name, value in endpoint.headers.items()},
            "content-type": content_type,
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                endpoint.signing_keys(time.time_ns() // 1_000_000), msg_id, timestamp, body
            ),
        }
        try:
            async with self._session.post(
                endpoint.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                snippet = await response.content.read(SNIPPET_BYTES)
                return Outcome(
                    response.status,
                    (time.perf_counter() - started) * 1000,
                    None if 200 <= response.status < 300 else f"HTTP {response.status}",
                    snippet.decode("utf-8", "replace"),
                )
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Outcome(None, (time.perf_counter() - started) * 1000, error)
