"""Bridge test helpers: a bridge replica as a subprocess, a real webhook receiver that
verifies every request with the independent `standardwebhooks` package, and a publisher
of event envelopes onto the durable event stream."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from contracts.bus import create_bus
from contracts.bus.streams import durable
from contracts.codec import EnvelopeCodec
from contracts.envelope import Envelope, new_id, now_ms
from contracts.topics import Topics
from tests.support.gateway import RelaygateRole, wait_until, write_config
from tests.support.processes import free_port

SHORT_SCHEDULE = [0.0, 0.4, 0.8]


def bridge_config(
    bus_url: str, prefix: str, port: int, state_url: str | None = None, **bridge: Any
) -> dict[str, Any]:
    return {
        "bus": {"url": bus_url, "prefix": prefix},
        "state": {"url": state_url},
        "bridge": {
            "port": port,
            "retry_schedule_s": SHORT_SCHEDULE,
            "jitter": 0.0,
            "timeout_ms": 1000,
            "redeliver_after_s": 2.0,
            "allow_networks": ["127.0.0.0/8"],
            **bridge,
        },
    }


class Bridge(RelaygateRole):
    """`relaygate bridge` with its admin API on a free port."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        bus_url: str,
        prefix: str,
        state_url: str | None = None,
        **bridge: Any,
    ):
        self.port = free_port()
        self.prefix = prefix
        config = bridge_config(bus_url, prefix, self.port, state_url, **bridge)
        config_file = write_config(workdir / f"{name}.yaml", config)
        super().__init__(workdir, name, config_file, ["bridge"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Bridge:
        super().start()
        return self

    def wait_ready(self, timeout: float = 60.0) -> Bridge:
        super().wait_ready(timeout)
        return self

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=10.0, **kwargs)

    def register(self, url: str, **fields: Any) -> dict[str, Any]:
        response = self.api("POST", "/endpoints", json={"url": url, **fields})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@dataclass
class Received:
    webhook_id: str
    payload: Any
    headers: dict[str, str]
    at: float
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on loopback. `answer(request_number)` picks the status (or None to
    never answer); every request is verified against `secrets` (any one must match)."""

    host: str = "127.0.0.1"
    secrets: list[str] = field(default_factory=list)
    answer: Callable[[int], int | None] = lambda n: 200
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        self._released.set()  # requests left hanging end now
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        payload: Any = None
        for secret in self.secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
                break
            except WebhookVerificationError:
                continue
        else:
            self.unverified.append(headers.get("webhook-id", "?"))
        number = len(self.received) + 1
        self.received.append(
            Received(headers.get("webhook-id", ""), payload, headers, time.time(), body)
        )
        status = self.answer(number)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if status is None:
            await self._released.wait()
            status = 503
        return web.Response(status=status, text=f"answer {status}")

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.received]


class Publisher:
    """Publishes event envelopes onto the durable event stream, as the ingress would."""

    def __init__(self, bus_url: str, prefix: str) -> None:
        self.bus = create_bus(bus_url, topics=Topics(prefix), node_id="publisher")
        self.streams = durable(self.bus)
        self.codec = EnvelopeCodec()

    async def connect(self) -> Publisher:
        await self.bus.connect()
        return self

    async def publish(self, event_type: str, data: bytes = b'{"n": 1}') -> str:
        envelope = Envelope(
            id=new_id(),
            source="tests",
            type=f"event.{event_type}",
            time=now_ms(),
            subject=event_type,
            datacontenttype="application/json",
            data=data,
        )
        await self.streams.publish_durable(
            self.bus.topics.events(), self.codec.encode(envelope), msg_id=envelope.id
        )
        return envelope.id

    async def close(self) -> None:
        await self.bus.close()


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


async def eventually(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout:.0f}s: {what}")
        await asyncio.sleep(0.02)


__all__ = ["Bridge", "Publisher", "Receiver", "eventually", "unique_prefix", "wait_until"]
