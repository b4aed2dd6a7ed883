"""`python -m tests.bench.webhooks [--receivers N] [--events M]`: webhook deliveries per
second from one bridge replica (a real `relaygate bridge` on a real nats-server) to N
local receivers, each an endpoint subscribed to every event.

M events are published onto the durable event stream (as the ingress would after a
202); the figure is N x M deliveries over the time from the first publish to the last
delivery received, with the bridge's CPU per delivery. The receivers (one aiohttp
server in this process, a port each) answer 200 without checking signatures, so that
this process costs the bridge as little as possible. Not a test: figures, one run."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from aiohttp import web

from tests.bridge.support import Bridge, Publisher
from tests.support.gateway import stop_all
from tests.support.processes import NatsServer, free_port


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(receivers: int, events: int, workdir: Path) -> None:
    nats = NatsServer(workdir).start()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    bridge = Bridge(workdir, "bridge", nats.url, prefix, max_concurrency=8)
    bridge.start()
    received = 0
    done = asyncio.Event()
    total = receivers * events

    async def hook(_request: web.Request) -> web.Response:
        nonlocal received
        received += 1
        if received >= total:
            done.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    publisher = Publisher(nats.url, prefix)
    try:
        await runner.setup()
        ports = [free_port() for _ in range(receivers)]
        for port in ports:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        bridge.wait_ready()
        for port in ports:
            bridge.register(f"http://127.0.0.1:{port}/hook", events=["*"])
        await publisher.connect()
        await asyncio.sleep(2.0)  # every endpoint's consumer subscribed
        cpu_before = _cpu_s(bridge.pid)
        started = time.perf_counter()
        for _ in range(events):
            await publisher.publish("bench.created")
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - started
        cpu = _cpu_s(bridge.pid) - cpu_before
        print(f"receivers              {receivers}")
        print(f"events                 {events}")
        print(f"deliveries             {received} in {elapsed:.1f} s")
        print(f"deliveries per second  {received / elapsed:,.0f}")
        print(f"bridge CPU             {cpu * 1e6 / received:.0f} us per delivery")
    finally:
        await publisher.close()
        await runner.cleanup()
        stop_all([bridge])
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, default=100)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--workdir", type=Path, help="keep the logs here (default: a temp dir)")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(args.receivers, args.events, args.workdir))
        return
    with tempfile.TemporaryDirectory(prefix="rg-webhooks-bench-") as workdir:
        asyncio.run(run(args.receivers, args.events, Path(workdir)))


if __name__ == "__main__":
    main()
