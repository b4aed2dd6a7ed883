"""WebSockets end to end: two `relaygate ingress` nodes and a team's worker written
with the SDK (`relaygate worker module`, on FastStream), on a real nats-server.
A thousand sockets talk to the worker through both nodes; the worker pushes to one
connection on the other node and to a channel with members on both; handshakes
without credentials or from a foreign origin are refused; an oversize message is
closed with 1009; SIGTERM says 1001."""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.conftest import BUSES, bus_url
from tests.support.gateway import (
    IngressNode,
    RelaygateRole,
    admin_stats,
    running,
    terminate,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.e2e

SOCKETS = {"nats": 1000, "kafka": 100}
LIMIT = 4096

CHAT_WORKER = '''\
"""A team's socket worker: whoami, echo:X, `tell <connection> X`, `all X` (channel)."""

from workers.sdk import SocketEvent, Sockets, Worker

worker = Worker("chat")


@worker.socket
async def on_socket(event: SocketEvent, sockets: Sockets) -> str | None:
    if event.kind == "open":
        await sockets.join(event.connection_id, "everyone")
        return None
    if event.kind == "close":
        return None
    text = event.text or ""
    if text == "whoami":
        principal = event.principal
        return event.connection_id + " " + (principal.subject if principal else "-")
    if text.startswith("echo:"):
        return text[5:]
    if text.startswith("tell "):
        _, connection, message = text.split(" ", 2)
        await sockets.send(connection, message)
        return None
    if text.startswith("all "):
        await sockets.publish("everyone", text[4:])
        return None
    return "unknown"
'''


@dataclass
class Cluster:
    bus: str
    nodes: list[IngressNode]
    node_ids: list[str]

    def members(self) -> int:
        return sum(admin_stats(n.admin_url)["websockets"]["members"] for n in self.nodes)

    def url(self, index: int, route: str = "chat") -> str:
        return f"ws://127.0.0.1:{self.nodes[index].port}/ws/{route}"


@pytest.fixture(scope="module", params=BUSES)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    bus: str = request.param
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * SOCKETS[bus]:  # the nodes inherit it: each holds half the sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * SOCKETS[bus]), hard))
    workdir = tmp_path_factory.mktemp(f"websocket-{bus}")
    modules = workdir / "modules"
    modules.mkdir()
    (modules / "e2e_chat_worker.py").write_text(CHAT_WORKER)
    worker_to = {"type": "worker", "topic": "chat"}
    config = write_config(
        workdir / "ws.yaml",
        {
            "bus": {"url": bus_url(request, bus), "prefix": f"ws-{uuid.uuid4().hex[:10]}"},
            "routes": [
                {
                    "name": "chat",
                    "when": {"path": "/chat"},
                    "to": worker_to,
                    "websocket": {
                        "origins": ["https://app.example.com"],
                        "max_message_bytes": LIMIT,
                        "rate": None,
                    },
                },
                {
                    "name": "keyed",
                    "when": {"path": "/keyed"},
                    "to": worker_to,
                    "policies": [{"type": "api_key"}],
                    "websocket": {},
                },
            ],
        },
    )
    worker = RelaygateRole(
        workdir,
        "chat-worker",
        config,
        ["worker", "module", "--target", "e2e_chat_worker:worker"],
        python_path=[modules],
    )
    nodes = [IngressNode(workdir, f"ingress-{i}", config) for i in (1, 2)]
    with running([worker, *nodes]):
        started = Cluster(bus, nodes, [node.ready_file.read_text() for node in nodes])
        if bus == "kafka":  # a Kafka consumer serves only after its group join
            asyncio.run(_until_answered(started))
        yield started


async def _until_answered(cluster: Cluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for index in (0, 1):
        while True:
            async with connect(cluster.url(index)) as socket:
                await socket.send("echo:ready")
                try:
                    if await asyncio.wait_for(socket.recv(), 2) == "ready":
                        break
                except TimeoutError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer through ingress-{index + 1} in {timeout:.0f}s")


async def _ask(socket: ClientConnection, text: str) -> str:
    await socket.send(text)
    answer = await asyncio.wait_for(socket.recv(), 20)
    assert isinstance(answer, str)
    return answer


async def _close_code(socket: ClientConnection) -> int | None:
    try:
        while True:
            await asyncio.wait_for(socket.recv(), 20)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_a_thousand_sockets_through_two_nodes(cluster: Cluster) -> None:
    """(A hundred on Kafka: the Tansu broker is slower, and the path is the same.)"""
    count = SOCKETS[cluster.bus]
    started = time.monotonic()
    gate = asyncio.Semaphore(100)

    async def open_socket(i: int) -> ClientConnection:
        async with gate:
            return await connect(cluster.url(i % 2), open_timeout=20, ping_interval=None)

    before = cluster.members()
    sockets = await asyncio.gather(*(open_socket(i) for i in range(count)))
    try:
        # Every socket asks the worker who it is: the answer names the node holding it.
        answers = await asyncio.gather(*(_ask(s, "whoami") for s in sockets))
        ids = [answer.split(" ")[0] for answer in answers]
        assert len(set(ids)) == count
        for i, connection in enumerate(ids):
            assert connection.startswith(cluster.node_ids[i % 2] + ":"), connection
        for node in cluster.nodes:
            assert admin_stats(node.admin_url)["websockets"]["open"] >= count // 2
        echoes = await asyncio.gather(*(_ask(s, f"echo:{i}") for i, s in enumerate(sockets)))
        assert echoes == [str(i) for i in range(count)]

        # A push to one connection held by the other node.
        await sockets[0].send(f"tell {ids[1]} just for you")
        assert await asyncio.wait_for(sockets[1].recv(), 10) == "just for you"

        # A channel push: every socket, on both nodes, gets it once. (Each joined the
        # channel when it opened; on Kafka the join travels on another topic than the
        # answers, so wait until the nodes have applied every join.)
        await asyncio.to_thread(
            wait_until, lambda: cluster.members() >= before + count, 30, "channel joins"
        )
        await sockets[0].send("all hello everyone")
        received = await asyncio.gather(*(asyncio.wait_for(s.recv(), 20) for s in sockets))
        assert received == ["hello everyone"] * count
    finally:
        await asyncio.gather(*(s.close() for s in sockets))
    assert time.monotonic() - started < 60


async def test_handshakes_without_credentials_or_from_a_foreign_origin_are_refused(
    cluster: Cluster,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(cluster.url(0, "keyed"), open_timeout=10)
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["content-type"] == "application/problem+json"
    with pytest.raises(InvalidStatus) as refused:
        await connect(cluster.url(1), origin="https://evil.example.net", open_timeout=10)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    async with connect(cluster.url(1), origin="https://app.example.com") as socket:  # type: ignore[arg-type]
        assert (await _ask(socket, "whoami")).startswith(cluster.node_ids[1] + ":")


async def test_an_oversize_message_is_closed_with_1009(cluster: Cluster) -> None:
    async with connect(cluster.url(0)) as socket:
        assert await _ask(socket, "echo:" + "y" * (LIMIT - 5)) == "y" * (LIMIT - 5)
        await socket.send("z" * (LIMIT + 1))
        assert await _close_code(socket) == 1009


async def test_sigterm_closes_sockets_with_1001(cluster: Cluster) -> None:
    async with connect(cluster.url(1)) as socket:
        await _ask(socket, "whoami")
        code, _ = await asyncio.to_thread(terminate, cluster.nodes[1])
        assert code == 0
        assert await _close_code(socket) == 1001
