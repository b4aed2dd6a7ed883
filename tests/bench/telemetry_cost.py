"""What logs, traces and metrics cost per request, in one process: an ingress app and
the echo worker on the in-memory bus, driven by direct ASGI calls (no sockets, no
broker), so the difference between modes is the telemetry's CPU alone.

    .venv/bin/python -m tests.bench.telemetry_cost [--requests 20000] [--repeat 3] [--profile MODE]

Modes: `off` (metrics only), `access` (+ the JSON access log), `traced` (+ tracing,
every trace sampled, batch export over OTLP/HTTP to a local receiver that drops what it
gets; the export thread's CPU counts: it is process time)."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any

from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.config import Config
from contracts.telemetry import logs, tracing
from contracts.topics import Topics
from ingress.app import IngressApp
from tests.support.processes import free_port, wait_for_port
from workers.echo import echo
from workers.sdk.worker import Worker

MODES = ("off", "access", "traced")


def _config(access_log: bool, traced: bool) -> Config:
    return Config.model_validate(
        {
            "bus": {"url": "memory://"},
            "telemetry": {
                "logs": {"access_log": access_log},
                "tracing": {"enabled": traced, "sample_ratio": 1.0},
            },
            "routes": [
                {
                    "name": "echo",
                    "when": {"path": "/echo/{p:path}"},
                    "to": {"type": "worker", "topic": "echo"},
                }
            ],
        }
    )


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/echo/hello",
        "raw_path": b"/echo/hello",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }


async def _drive(app: IngressApp, requests: int, concurrency: int) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def client(n: int) -> None:
        for _ in range(n):
            await app(_scope(), receive, send)

    await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))


async def measure(mode: str, requests: int, concurrency: int, profile: bool) -> float:
    """CPU µs per request (process time, every thread) in `mode`."""
    config = _config(access_log=mode != "off", traced=mode == "traced")
    sink = open(os.devnull, "w")  # noqa: SIM115  (a file, as stderr is in production)
    logs.configure_logging(config.telemetry.logs, "info", stream=sink)
    tracing.configure_tracing(config.telemetry.tracing, "bench")
    hub = MemoryHub()
    topics = Topics("rg")
    ingress_bus = MemoryBus(topics=topics, node_id="ingress", hub=hub)
    worker_bus = MemoryBus(topics=topics, node_id="worker", hub=hub)
    await ingress_bus.connect()
    await worker_bus.connect()
    worker = Worker("echo")
    worker.handler(echo)
    await worker.serve(worker_bus)
    app = IngressApp(config, ingress_bus)
    await _drive(app, 500, concurrency)  # warm-up
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler is not None:
        profiler.enable()
    await _drive(app, requests, concurrency)
    tracing.shutdown_tracing(timeout_s=10)  # the export of what is buffered counts
    logs.shutdown_logging()
    if profiler is not None:
        profiler.disable()
    spent = time.process_time() - started
    sink.close()
    await ingress_bus.close()
    await worker_bus.close()
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())
    return spent / requests * 1e6


def _run(work: Coroutine[Any, Any, float]) -> float:
    """On uvloop, as the ingress and workers run."""
    import uvloop

    return uvloop.run(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", choices=MODES, help="cProfile this mode's run")
    parser.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per mode, alternating; the least is kept"
    )
    args = parser.parse_args()
    # The receiver runs in a process of its own: its CPU is not the exporter's.
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "tests.telemetry.otlp", "--port", str(port)])
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, proc=receiver)
        figures: dict[str, float] = {}
        for _ in range(args.repeat):  # the machine is shared: keep each mode's best run
            for mode in args.modes:
                us = _run(measure(mode, args.requests, args.concurrency, args.profile == mode))
                figures[mode] = min(us, figures.get(mode, us))
    finally:
        receiver.terminate()
        receiver.wait(10)
    base = figures.get("off")
    for mode, us in figures.items():
        extra = f"  (+{us - base:.1f} µs over off)" if base is not None and mode != "off" else ""
        print(f"{mode:7} {us:7.1f} µs CPU per request{extra}")


if __name__ == "__main__":
    main()
