"""Runs one worker process of a kind (echo, routing, module) until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from prometheus_client.registry import Collector

from contracts.bus import Bus, Subscription
from contracts.bus.connect import bus_from_config, connect_with_retry
from contracts.config import (
    AsyncWorker,
    Config,
    ConfigError,
    EchoWorker,
    ModuleWorker,
    RoutingWorker,
    load_config,
)
from contracts.envelope import new_id
from contracts.gc_tuning import tune_gc
from contracts.lifecycle import exit_if_stuck
from contracts.telemetry.metrics import (
    WORKER_IN_FLIGHT,
    BusCollector,
    InFlightCollector,
    UpstreamCollector,
    registry_with,
    serve_metrics,
)
from workers.echo import echo
from workers.routing import RoutingWorker as Routing
from workers.routing import build_routing
from workers.sdk import Worker, load_worker

log = logging.getLogger("relaygate.worker")

WorkerKind = EchoWorker | RoutingWorker | ModuleWorker | AsyncWorker


async def serve_worker(
    config: Config,
    spec: WorkerKind,
    ready_file: str | None = None,
    config_path: str | None = None,
    *,
    metrics_port: int | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. A routing worker reloads its routes on SIGHUP.
    `/metrics` listens on `metrics_port`, else telemetry.metrics.worker_port if set."""
    node_id = f"{spec.type}-{new_id()[:12]}"
    stopping = asyncio.Event()
    reloads: asyncio.Queue[None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        stopping.set()
        exit_if_stuck()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    metrics = config.telemetry.metrics
    port = metrics_port if metrics_port is not None else metrics.worker_port
    collectors: list[Collector] = [InFlightCollector(WORKER_IN_FLIGHT)]
    if isinstance(spec, ModuleWorker):
        listener = _metrics_listener(metrics.enabled, metrics.worker_host, port, collectors)
        try:
            await _serve_module(config, spec, node_id, stopping, ready_file)
        finally:
            if listener is not None:
                listener.shutdown()
        return

    bus = bus_from_config(config, node_id)
    await connect_with_retry(bus)
    subscriptions: list[Subscription] = []
    routing = None
    runner = None
    redis: Any = None

    def upstreams() -> dict[str, Any]:
        if routing is None:
            return {}
        return {name: pool.snapshot() for name, pool in routing.pools.items()}

    collectors += [BusCollector(bus.pending), UpstreamCollector(upstreams)]
    listener = _metrics_listener(metrics.enabled, metrics.worker_host, port, collectors)
    try:
        if isinstance(spec, EchoWorker):
            for topic in spec.topics:
                worker = Worker(topic, group="workers.echo", otel_api=False)
                worker.handler(echo)
                subscriptions.append(await worker.serve(bus))
            what = "topics " + ", ".join(bus.topics.request(t) for t in spec.topics)
        elif isinstance(spec, AsyncWorker):
            from workers.async_runner import start_async_runner

            if config.state.url is not None:
                from redis.asyncio import Redis

                redis = Redis.from_url(config.state.url)
            runner = await start_async_runner(config, bus, redis)
            what = f"async requests on {bus.topics.async_requests()}"
        else:
            routing = build_routing(config)
            await routing.start(bus)
            what = f"{len(routing.topics)} upstream route(s)"
            if config_path is not None:
                loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, None)
        log.info("worker %s ready on %s (%s)", node_id, bus.url, what)
        _mark_ready(ready_file, node_id)
        stopped = asyncio.ensure_future(stopping.wait())
        while not stopping.is_set():
            reload = asyncio.ensure_future(reloads.get())
            await asyncio.wait([stopped, reload], return_when=asyncio.FIRST_COMPLETED)
            if reload.done() and routing is not None and config_path is not None:
                routing = await _reload_routing(routing, bus, config_path)
            reload.cancel()
    finally:
        for sub in subscriptions:
            await sub.stop()
        if runner is not None:
            await runner.stop()
        if redis is not None:
            await redis.aclose()
        if routing is not None:
            await routing.close()
        await bus.close()
        if listener is not None:
            listener.shutdown()


def _metrics_listener(
    enabled: bool, host: str, port: int | None, collectors: list[Collector]
) -> Any:
    """The worker's `/metrics` listener (a thread), or None when there is no port."""
    if not enabled or port is None:
        return None
    server, _ = serve_metrics(host, port, registry_with(*collectors))
    return server


async def _reload_routing(current: Routing, bus: Bus, path: str) -> Routing:
    """Subscribe the new route set before dropping the old one, so no request finds
    nobody listening; a bad file keeps the running routes."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload refused, keeping the running routes: %s: %s", path, problem)
        return current
    replacement = build_routing(config)
    replacement.adopt_instances(current)
    await replacement.start(bus)
    await current.close()
    log.info("reloaded %s: %d upstream route(s)", path, len(replacement.topics))
    return replacement


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
    tune_gc()
    if ready_file:
        Path(ready_file).write_text(node_id)
