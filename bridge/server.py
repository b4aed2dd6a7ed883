"""Runs one bridge replica: the endpoint watch, the delivery consumers and the admin
API, stopped by SIGINT/SIGTERM. Replicas share endpoints (watched state) and split each
endpoint's deliveries (shared durable consumers). State lives in JetStream on a NATS
bus, in Redis (`state.url`) on a Kafka bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from redis.asyncio import Redis

from bridge.admin import build_bridge_admin
from bridge.delivery import Deliverer, Forget
from bridge.jetstream import KvEndpointStore, StreamJournal, forget_endpoint
from bridge.redis_state import RedisEndpointStore, RedisJournal
from bridge.sender import Sender
from bridge.ssrf import AddressPolicy
from bridge.state import EndpointStore, Journal
from contracts.bus.connect import bus_from_config, connect_with_retry
from contracts.bus.nats import NatsBus
from contracts.config import Config
from contracts.envelope import new_id
from contracts.gc_tuning import tune_gc
from contracts.lifecycle import exit_if_stuck

log = logging.getLogger("relaygate.bridge")

ATTEMPTS_KEPT_PER_ENDPOINT = 500
ATTEMPTS_KEPT_IN_REDIS = 100_000
DEAD_LETTERS_KEPT_IN_REDIS = 1_000_000
RECONCILE_EVERY_S = 15.0


class _Server(uvicorn.Server):
    """Signals are handled by `serve_bridge`, which closes the consumers too."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class BridgeNeedsState(SystemExit):
    def __init__(self, url: str) -> None:
        super().__init__(
            f"relaygate bridge: on bus {url!r} the bridge keeps its endpoints, attempt log "
            "and dead letters in Redis: set state.url (redis://…), or use a nats:// bus"
        )


State = tuple[EndpointStore, Journal, Journal, Forget | None]


def _jetstream_state(bus: NatsBus, config: Config) -> State:
    js, retention = bus.jetstream(), config.bridge.event_retention_s
    attempts = StreamJournal(
        js,
        bus.topics.webhooks("log"),
        max_age_s=retention,
        max_per_subject=ATTEMPTS_KEPT_PER_ENDPOINT,
    )
    dead_letters = StreamJournal(js, bus.topics.dead_letter("webhooks"), max_age_s=retention)

    async def forget(endpoint_id: str, consumers: dict[str, str]) -> None:
        await forget_endpoint(bus, endpoint_id, consumers)

    store = KvEndpointStore(js, f"{bus.topics.prefix.replace('.', '_')}_webhooks")
    return store, attempts, dead_letters, forget


def _redis_state(redis: Redis, prefix: str) -> State:
    return (
        RedisEndpointStore(redis, prefix),
        RedisJournal(redis, prefix, "webhooks:log", maxlen=ATTEMPTS_KEPT_IN_REDIS),
        RedisJournal(redis, prefix, "dlq:webhooks", maxlen=DEAD_LETTERS_KEPT_IN_REDIS),
        None,
    )


async def serve_bridge(config: Config, ready_file: str | None = None) -> None:
    node_id = f"bridge-{new_id()[:12]}"
    bus = bus_from_config(config, node_id)
    redis: Redis | None = None
    if isinstance(bus, NatsBus):
        await connect_with_retry(bus)
        store, attempts, dead_letters, forget = _jetstream_state(bus, config)
        await bus.ensure_stream(bus.topics.events(), max_age_s=config.bridge.event_retention_s)
    elif config.state.url is not None:
        await connect_with_retry(bus)
        timeout = max(1.0, config.state.timeout_ms / 1000)
        redis = Redis.from_url(
            config.state.url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        store, attempts, dead_letters, forget = _redis_state(redis, bus.topics.prefix)
    else:
        raise BridgeNeedsState(bus.url)
    settings = config.bridge
    for part in (store, attempts, dead_letters):
        await part.open()
    policy = AddressPolicy(settings.allow_networks)
    sender = Sender(policy, settings.timeout_ms / 1000)
    await sender.start()
    deliverer = Deliverer(bus, settings, store, sender, attempts, dead_letters, forget)
    await store.watch(deliverer.apply)
    reconciling = asyncio.create_task(_reconcile(deliverer))
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
            tune_gc()
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
        reconciling.cancel()
        await asyncio.gather(reconciling, return_exceptions=True)
        await store.close()
        await deliverer.close()
        await sender.close()
        await bus.close()
        if redis is not None:
            await redis.aclose()


async def _reconcile(deliverer: Deliverer) -> None:
    while True:
        await asyncio.sleep(RECONCILE_EVERY_S)
        try:
            await deliverer.reconcile()
        except Exception as exc:  # the store is away: the next round tries again
            log.warning("bridge: reconciling endpoints failed: %r", exc)
