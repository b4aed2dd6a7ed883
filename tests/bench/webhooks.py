"""`python -m tests.bench.webhooks [--receivers N] [--events M]`: webhook deliveries per
second from one bridge replica (a real `relaygate bridge` on a real nats-server with
JetStream) to N local receivers, each registered for every event.

Publishes M events onto the durable events stream, as the ingress does, and times the
N x M signed deliveries from the first publish to the last arrival; prints deliveries
per second and the publish-to-arrival latency percentiles. Not a test: figures, one run."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.bridge.support import Bridge, Publisher, Receiver
from tests.support.gateway import stop_all
from tests.support.processes import NatsServer


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _until(what: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what}: not after {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def run(receivers: int, events: int, workdir: Path) -> None:
    nats = NatsServer(workdir).start()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    bridge = Bridge(workdir, "bridge-bench", nats.url, prefix, timeout_ms=10_000)
    sinks = [await Receiver().start() for _ in range(receivers)]
    publisher = await Publisher(nats.url, prefix).connect()
    try:
        bridge.start().wait_ready()
        print(f"bridge pid {bridge.pid}, {receivers} receivers, {events} events", flush=True)
        for sink in sinks:
            bridge.register(sink.url, events=["*"])
        # One event every receiver gets: each endpoint's consumer is up and warm.
        await publisher.publish("bench.warmup")
        await _until("warm-up delivered", lambda: all(s.received for s in sinks), 60)
        for sink in sinks:
            sink.received.clear()
        total = receivers * events
        sent: dict[str, float] = {}
        started = time.monotonic()
        for n in range(events):
            event_id = await publisher.publish("bench.item", b'{"n": %d}' % n)
            sent[event_id] = time.time()
        published_s = time.monotonic() - started
        await _until(
            f"{total} deliveries", lambda: sum(len(s.received) for s in sinks) >= total, 600
        )
        elapsed = time.monotonic() - started
        latencies = [
            (r.at - sent[r.webhook_id]) * 1000
            for s in sinks
            for r in s.received
            if r.webhook_id in sent
        ]
        duplicates = sum(len(s.received) - len(set(s.ids())) for s in sinks)
        print(f"published {events} events durably in {published_s:.2f} s")
        print(
            f"delivered {total} webhooks in {elapsed:.2f} s: "
            f"{total / elapsed:,.0f} deliveries/s ({duplicates} duplicates)"
        )
        print(
            "publish-to-arrival latency ms: "
            f"p50 {statistics.median(latencies):.0f}, p90 {_percentile(latencies, 0.9):.0f}, "
            f"p99 {_percentile(latencies, 0.99):.0f}, max {max(latencies):.0f}"
        )
    finally:
        await publisher.close()
        for sink in sinks:
            await sink.stop()
        stop_all([bridge, nats])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.webhooks")
    parser.add_argument("--receivers", type=int, default=100, help="endpoints (100)")
    parser.add_argument("--events", type=int, default=50, help="events published (50)")
    parser.add_argument("--workdir", type=Path, help="keep logs here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="relaygate-webhooks-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args.receivers, args.events, workdir))


if __name__ == "__main__":
    main()
