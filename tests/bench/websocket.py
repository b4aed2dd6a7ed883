"""`python -m tests.bench.websocket [--connections N]`: idle WebSockets on one ingress
node (a real `relaygate ingress` on a real nats-server) and one push to all of them.

Prints the ingress's RSS before and after the sockets open (memory per connection),
and the time from publishing one channel message to its arrival at the last socket.
A socket worker in this process (SDK `Worker.serve` on the bus facade) joins each
connection to the channel on `ws.open`. The sockets are light clients
(tests/bench/ws_receivers.py) on uvloop, so that reading 10,000 sockets in this one
process takes less time than the node's fan-out. Not a test: figures, one run."""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import uvloop
from websockets.asyncio.client import connect

from contracts.bus import create_bus
from contracts.topics import Topics
from tests.bench.ws_receivers import Arrivals, Receiver, open_receivers
from tests.support.gateway import IngressNode, admin_stats, stop_all, write_config
from tests.support.processes import NatsServer
from workers.sdk import SocketEvent, Sockets, Worker

CHANNEL = "everyone"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def _wait_for(condition: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {condition}: not after {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def run(connections: int, workdir: Path) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + 1024
    if hard < needed:
        raise SystemExit(f"bench: the open-files hard limit is {hard}; {needed} needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the node inherits it
    nats = NatsServer(workdir).start()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    config = write_config(
        workdir / "ws-bench.yaml",
        {
            "bus": {"url": nats.url, "prefix": prefix},
            "routes": [
                {
                    "name": "chat",
                    "when": {"path": "/chat"},
                    "to": {"type": "worker", "topic": "chat"},
                    "websocket": {},
                }
            ],
        },
    )
    node = IngressNode(workdir, "ingress", config)
    node.start()
    bus = create_bus(nats.url, node_id="bench", topics=Topics(prefix))
    opened = 0

    async def on_socket(event: SocketEvent, sockets: Sockets) -> None:
        nonlocal opened
        if event.kind == "open":
            await sockets.join(event.connection_id, CHANNEL)
            opened += 1

    sockets: list[Receiver] = []
    try:
        node.wait_ready()
        await bus.connect()
        worker = Worker("chat")
        worker.socket(on_socket)
        await worker.serve(bus)
        pusher = Sockets.on_bus(bus)
        path = "/ws/chat"
        url = f"ws://127.0.0.1:{node.port}{path}"
        # Warm up the data plane (imports, first subscription) before the baseline.
        async with connect(url) as warm:
            await warm.send("warm-up")
        await asyncio.sleep(1.0)
        before = _rss_kib(node.pid)

        arrivals = Arrivals(connections)
        started = time.perf_counter()
        sockets = await open_receivers("127.0.0.1", node.port, path, connections, arrivals)
        open_s = time.perf_counter() - started
        await _wait_for("every ws.open joined", lambda: opened >= connections + 1, 120)

        def joined() -> bool:
            stats = admin_stats(node.admin_url)["websockets"]
            return bool(stats["members"] >= connections)

        await _wait_for("every join applied", joined, 60)
        gc.collect()
        await asyncio.sleep(2.0)  # idle: let the node settle
        after = _rss_kib(node.pid)

        started = time.perf_counter()
        await pusher.publish(CHANNEL, "to everyone")
        await asyncio.wait_for(arrivals.done, 60)
        push_s = arrivals.last - started
        assert arrivals.messages == [b"to everyone"] * connections, "a socket got something else"

        per_kib = (after - before) / connections
        print(f"connections            {connections}")
        print(f"opened in              {open_s:.1f} s ({connections / open_s:.0f}/s)")
        print(f"ingress RSS before     {before / 1024:.1f} MiB")
        print(f"ingress RSS idle       {after / 1024:.1f} MiB")
        print(f"memory per connection  {per_kib:.1f} KiB")
        print(f"push to first          {(arrivals.first - started) * 1000:.0f} ms")
        print(f"push to all            {push_s * 1000:.0f} ms (publish -> last socket received)")
    finally:
        for receiver in sockets:
            receiver.close()
        await bus.close()
        stop_all([node])
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, help="keep the logs here (default: a temp dir)")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        uvloop.run(run(args.connections, args.workdir))
        return
    with tempfile.TemporaryDirectory(prefix="rg-ws-bench-") as workdir:
        uvloop.run(run(args.connections, Path(workdir)))


if __name__ == "__main__":
    main()
