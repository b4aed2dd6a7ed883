"""The real data plane in-process on a real port: IngressApp behind the listeners
`ingress.server` builds (protocol, TLS, redirect), over the in-memory bus to a worker
that records every request it gets. For raw-socket tests of the transport layer."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.config import Config
from contracts.topics import Topics
from ingress.app import IngressApp
from ingress.server import data_plane_servers
from ingress.transport import Transport
from tests.support.processes import free_port
from workers.sdk import Request, Response, Worker

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")

ROUTES: list[dict[str, Any]] = [
    {
        "name": "echo",
        "when": {"path": "/echo/{rest:path}"},
        "to": {"type": "worker", "topic": "echo"},
        "max_body_bytes": 1024,
    }
]


@dataclass
class LiveIngress:
    port: int
    app: IngressApp
    transport: Transport
    redirect_port: int | None = None
    seen: list[Request] = field(default_factory=list)  # what the worker received

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.seen]

    @property
    def stored_events(self) -> list[bytes]:
        """The encoded envelopes event intake stored, in order."""
        bus = self.app.bus
        assert isinstance(bus, MemoryBus)
        return [data for data, _ in bus.hub.streams[bus.topics.events()].messages]


@asynccontextmanager
async def live_ingress(
    ingress: dict[str, Any] | None = None,
    routes: list[dict[str, Any]] | None = None,
    events: dict[str, Any] | None = None,
    **sections: Any,
) -> AsyncIterator[LiveIngress]:
    """Serve `routes` (default: /echo/{rest} to a recording worker) with `ingress:`
    settings on a free port; with `tls.redirect_port: 0` the redirect gets one too.
    `events:` is the config's event intake, stored on the in-memory bus; other top-level
    config sections come as keywords (`security_headers=...`)."""
    settings = {**(ingress or {}), "port": free_port()}
    if settings.get("tls", {}).get("redirect_port") == 0:
        settings["tls"] = {**settings["tls"], "redirect_port": free_port()}
    config = Config(
        ingress=settings,
        routes=routes if routes is not None else ROUTES,
        events=events or {},
        **sections,
    )
    hub = MemoryHub()
    ingress_bus = MemoryBus(topics=Topics(), node_id="ingress-1", hub=hub)
    worker_bus = MemoryBus(topics=Topics(), node_id="worker-1", hub=hub)
    await ingress_bus.connect()
    await worker_bus.connect()
    app = IngressApp(config, ingress_bus)
    transport = Transport(config.ingress)
    tls = config.ingress.tls
    live = LiveIngress(
        config.ingress.port, app, transport, tls.redirect_port if tls is not None else None
    )

    async def record(request: Request) -> Response:
        live.seen.append(request)
        return Response(200, [("content-type", "application/octet-stream")], request.body)

    worker = Worker("echo")
    worker.handler(record)
    await worker.serve(worker_bus)
    servers = data_plane_servers(app, config, transport)
    loop = asyncio.get_running_loop()
    # An exception in a protocol callback is only logged by the loop: make it fail the test.
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: loop_errors.append(context))
    transport.start(loop)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                await asyncio.gather(*tasks)
                raise AssertionError("a listener stopped before it started")
            await asyncio.sleep(0.01)
        yield live
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        transport.close()
        await app.aclose()
        await ingress_bus.close()
        await worker_bus.close()
        loop.set_exception_handler(None)
    assert not loop_errors, f"errors on the event loop: {loop_errors}"


def exchange(
    port: int,
    raw: bytes,
    *,
    timeout: float = 5.0,
    tls: ssl.SSLContext | None = None,
) -> bytes:
    """Send `raw` on a fresh connection and read until the server closes it or
    `timeout` passes: everything the server wrote back (nothing if a TLS handshake
    fails). Blocking: run it in a thread."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is not None:
        try:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        except (ssl.SSLError, ConnectionResetError):
            sock.close()
            return b""  # the handshake failed: no HTTP exchange at all
    received = b""
    deadline = time.monotonic() + timeout
    with sock:
        sock.sendall(raw)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            received += chunk
    return received


def statuses(response: bytes) -> list[int]:
    """Status codes of the responses in a byte stream, in order (bodies here are short
    and never contain a status line)."""
    return [int(code) for code in _STATUS_LINE.findall(response)]
