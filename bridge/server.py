"""Runs one bridge replica: the endpoint watch, the delivery consumers and the admin
API, stopped by SIGINT/SIGTERM. Replicas share endpoints (a JetStream key-value
bucket) and split each endpoint's deliveries (shared durable consumers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from bridge.admin import build_bridge_admin
from bridge.delivery import Deliverer
from bridge.jetstream import EndpointStore, Journal
from bridge.sender import Sender
from bridge.ssrf import AddressPolicy
from contracts.bus.connect import bus_from_config, connect_with_retry
from contracts.bus.nats import NatsBus
from contracts.config import Config
from contracts.envelope import new_id
from contracts.lifecycle import exit_if_stuck

log = logging.getLogger("relaygate.bridge")

ATTEMPTS_KEPT_PER_ENDPOINT = 500


class _Server(uvicorn.Server):
    """Signals are handled by `serve_bridge`, which closes the consumers too."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class BridgeNeedsJetStream(SystemExit):
    def __init__(self, url: str) -> None:
        super().__init__(
            f"relaygate bridge: the webhook bridge keeps its endpoints, retries and dead "
            f"letters in NATS JetStream; bus.url {url!r} is not nats:// "
            "(`relaygate up` with no bus.url runs an embedded NATS)"
        )


async def serve_bridge(config: Config, ready_file: str | None = None) -> None:
    node_id = f"bridge-{new_id()[:12]}"
    bus = bus_from_config(config, node_id)
    if not isinstance(bus, NatsBus):
        raise BridgeNeedsJetStream(bus.url)
    await connect_with_retry(bus)
    settings = config.bridge
    js = bus.jetstream
    await bus.ensure_stream(bus.topics.events(), max_age_s=settings.event_retention_s)
    store = EndpointStore(js, f"{bus.topics.prefix}_webhooks")
    attempts = Journal(
        js,
        bus.topics.webhooks("log"),
        max_age_s=settings.event_retention_s,
        max_per_subject=ATTEMPTS_KEPT_PER_ENDPOINT,
    )
    dead_letters = Journal(
        js, bus.topics.dead_letter("webhooks"), max_age_s=settings.event_retention_s
    )
    for part in (store, attempts, dead_letters):
        await part.open()
    policy = AddressPolicy(settings.allow_networks)
    sender = Sender(policy, settings.timeout_ms / 1000)
    await sender.start()
    deliverer = Deliverer(bus, settings, store, sender, attempts, dead_letters)
    await store.watch(deliverer.apply)
    admin_app = build_bridge_admin(settings, store, deliverer, policy)
    server = _Server(
        uvicorn.Config(
            admin_app,
            host=settings.host,
            port=settings.port,
            loop="none",
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
    )

    def on_signal() -> None:
        server.should_exit = True
        exit_if_stuck()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if server.started:
            if ready_file:
                Path(ready_file).write_text(node_id)  # noqa: ASYNC240 (tiny, once)
            log.info(
                "bridge %s: admin on http://%s:%d, bus %s",
                node_id,
                settings.host,
                settings.port,
                bus.url,
            )
        await serving
        if not server.started:
            raise SystemExit(f"relaygate bridge: cannot serve on {settings.host}:{settings.port}")
    finally:
        await store.close()
        await deliverer.close()
        await sender.close()
        await bus.close()
