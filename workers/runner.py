"""Runs one worker process of a kind (echo, routing, module) until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from contracts.bus import Subscription
from contracts.bus.connect import bus_from_config, connect_with_retry
from contracts.config import Config, EchoWorker, ModuleWorker, RoutingWorker
from contracts.envelope import new_id
from workers.echo import echo
from workers.sdk import Worker, load_worker

log = logging.getLogger("relaygate.worker")

WorkerKind = EchoWorker | RoutingWorker | ModuleWorker


async def serve_worker(config: Config, spec: WorkerKind, ready_file: str | None = None) -> None:
    node_id = f"{spec.type}-{new_id()[:12]}"
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    if isinstance(spec, ModuleWorker):
        await _serve_module(config, spec, node_id, stopping, ready_file)
        return

    bus = bus_from_config(config, node_id)
    await connect_with_retry(bus)
    subscriptions: list[Subscription] = []
    routing = None
    try:
        if isinstance(spec, EchoWorker):
            for topic in spec.topics:
                worker = Worker(topic, group="workers.echo")
                worker.handler(echo)
                subscriptions.append(await worker.serve(bus))
            what = "topics " + ", ".join(bus.topics.request(t) for t in spec.topics)
        else:
            from workers.routing import build_routing

            routing = build_routing(config)
            await routing.start(bus)
            what = f"{len(routing.topics)} upstream route(s)"
        log.info("worker %s ready on %s (%s)", node_id, bus.url, what)
        _mark_ready(ready_file, node_id)
        await stopping.wait()
    finally:
        for sub in subscriptions:
            await sub.stop()
        if routing is not None:
            await routing.close()
        await bus.close()


async def _serve_module(
    config: Config,
    spec: ModuleWorker,
    node_id: str,
    stopping: asyncio.Event,
    ready_file: str | None,
) -> None:
    if config.bus.url is None:
        from contracts.bus.connect import BusNotConfigured

        raise BusNotConfigured
    worker = load_worker(spec.target)
    app = worker.faststream_app(config.bus.url, prefix=config.bus.prefix, node_id=node_id)
    await app.start()
    try:
        log.info("worker %s (%s) ready on %s", node_id, spec.target, config.bus.url)
        _mark_ready(ready_file, node_id)
        await stopping.wait()
    finally:
        await app.stop()


def _mark_ready(ready_file: str | None, node_id: str) -> None:
    if ready_file:
        Path(ready_file).write_text(node_id)
