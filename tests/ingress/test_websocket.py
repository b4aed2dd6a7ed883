"""WebSockets at the ingress, in process: a real uvicorn data plane (the production
settings from ingress/server.py) on a free port, the in-memory bus, an SDK worker
with a socket handler, and the `websockets` client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.config import Config, ConfigError, load_config
from contracts.topics import Topics
from ingress.app import IngressApp
from ingress.server import _server
from tests.support.processes import free_port
from workers.sdk import SocketEvent, Sockets, Worker


async def on_socket(event: SocketEvent, sockets: Sockets) -> str | bytes | None:
    """The test worker: `whoami`, `echo:X`, `all:X` (to channel lobby), `bye`."""
    if event.kind == "open":
        await sockets.join(event.connection_id, "lobby")
        return None
    if event.kind == "close":
        return None
    text = event.text or ""
    if text == "whoami":
        principal = event.principal
        return orjson.dumps(
            {
                "connection": event.connection_id,
                "route": event.route,
                "subject": principal.subject if principal else None,
            }
        ).decode()
    if text.startswith("echo:"):
        return text[5:]
    if text.startswith("all:"):
        await sockets.publish("lobby", text[4:])
        return None
    if text == "bye":
        await sockets.close(event.connection_id, 4000, "bye now")
        return None
    if event.text is None:
        return event.data[::-1]  # binary in, binary out
    return f"unknown:{text}"


def _config(tmp_path: Path) -> Config:
    worker_to = {"type": "worker", "topic": "chat"}
    return Config(
        state={"dir": str(tmp_path)},
        routes=[
            {
                "name": "chat",
                "when": {"path": "/chat"},
                "to": worker_to,
                "websocket": {
                    "origins": ["https://app.example.com"],
                    "max_message_bytes": 1024,
                    "rate": {"messages_per_s": 5, "burst": 20},
                },
            },
            {
                "name": "keyed",
                "when": {"path": "/keyed"},
                "to": worker_to,
                "policies": [{"type": "api_key"}],
                "websocket": {},
            },
            {"name": "plain", "when": {"path": "/plain"}, "to": worker_to},
        ],
    )


@asynccontextmanager
async def _serving(app: IngressApp, config: Config) -> AsyncIterator[int]:
    """`app` on uvicorn with the production settings, on a free port, until the block ends."""
    port = free_port()
    server = _server(app, "127.0.0.1", port, http="httptools", config=config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await task


@dataclass
class Gateway:
    app: IngressApp
    port: int
    pusher: Sockets

    def url(self, route: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{route}"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    hub = MemoryHub()
    ingress_bus = MemoryBus(topics=Topics(), node_id="node-a", hub=hub)
    worker_bus = MemoryBus(topics=Topics(), node_id="worker-1", hub=hub)
    await ingress_bus.connect()
    await worker_bus.connect()
    worker = Worker("chat")
    worker.socket(on_socket)
    await worker.serve(worker_bus)
    config = _config(tmp_path)
    app = IngressApp(config, ingress_bus)
    async with _serving(app, config) as port:
        yield Gateway(app, port, Sockets.on_bus(worker_bus))
    await app.aclose()
    await ingress_bus.close()
    await worker_bus.close()


async def _whoami(socket: ClientConnection) -> dict[str, Any]:
    await socket.send("whoami")
    answer: dict[str, Any] = orjson.loads(await asyncio.wait_for(socket.recv(), 5))
    return answer


async def _closed_with(socket: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes; its close frame."""
    try:
        while True:
            await asyncio.wait_for(socket.recv(), 5)
    except ConnectionClosed as closed:
        frame = closed.rcvd
        return (frame.code, frame.reason) if frame is not None else (None, None)


async def test_messages_reach_the_worker_and_its_answers_come_back(gateway: Gateway) -> None:
    async with connect(gateway.url("chat")) as socket:
        me = await _whoami(socket)
        assert me["route"] == "chat"
        assert me["connection"].startswith("node-a:")
        await socket.send("echo:hello")
        assert await asyncio.wait_for(socket.recv(), 5) == "hello"
        await socket.send(b"\x01\x02\x03")
        assert await asyncio.wait_for(socket.recv(), 5) == b"\x03\x02\x01"
    stats = gateway.app.websockets.stats()
    assert stats["opened"] == 1
    assert stats["messages"] == 3


async def test_push_to_one_connection_and_to_a_channel(gateway: Gateway) -> None:
    async with (
        connect(gateway.url("chat")) as first,
        connect(gateway.url("chat")) as second,
    ):
        one = (await _whoami(first))["connection"]
        await _whoami(second)  # both have joined the lobby (on open)
        await gateway.pusher.send(one, "just you")
        assert await asyncio.wait_for(first.recv(), 5) == "just you"
        await gateway.pusher.publish("lobby", b"\x00everyone")
        assert await asyncio.wait_for(first.recv(), 5) == b"\x00everyone"
        assert await asyncio.wait_for(second.recv(), 5) == b"\x00everyone"
        await first.send("all:from a client")
        assert await asyncio.wait_for(first.recv(), 5) == "from a client"
        assert await asyncio.wait_for(second.recv(), 5) == "from a client"
        await gateway.pusher.leave(one, "lobby")
        await gateway.pusher.publish("lobby", "not for the first")
        assert await asyncio.wait_for(second.recv(), 5) == "not for the first"
        await first.send("echo:next")  # the first got nothing in between
        assert await asyncio.wait_for(first.recv(), 5) == "next"


async def test_pushes_are_written_as_frames_encoded_once_in_every_length_form(
    gateway: Gateway,
) -> None:
    """The 7-bit, 16-bit and 64-bit length forms, text and binary, as one frame's bytes
    written straight to uvicorn's transport; the strict client parses each."""
    async with connect(gateway.url("chat"), max_size=None) as socket:
        me = (await _whoami(socket))["connection"]
        assert gateway.app.websockets.connections.by_id[me].socket is not None  # direct
        pushed = gateway.app.websockets.stats()["pushed"]
        messages: list[str | bytes] = []
        for length in (0, 125, 126, 65_535, 65_536, 200_000):
            messages += ["é" * (length // 2), b"\xff" * length]
        for message in messages:
            await gateway.pusher.send(me, message)
        assert [await asyncio.wait_for(socket.recv(), 5) for _ in messages] == messages
        await gateway.pusher.publish("lobby", "to the channel")
        assert await asyncio.wait_for(socket.recv(), 5) == "to the channel"
        assert gateway.app.websockets.stats()["pushed"] == pushed + len(messages) + 1


async def test_the_worker_closes_a_connection_with_its_code(gateway: Gateway) -> None:
    async with connect(gateway.url("chat")) as socket:
        await socket.send("bye")
        assert await _closed_with(socket) == (4000, "bye now")


async def test_unknown_and_http_only_routes_are_refused_with_404(gateway: Gateway) -> None:
    for route in ("nope", "plain"):
        with pytest.raises(InvalidStatus) as refused:
            await connect(gateway.url(route))
        response = refused.value.response
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert orjson.loads(response.body)["type"].endswith("/no-route")
    assert gateway.app.websockets.stats()["refused"] == 2


async def test_origin_is_checked_against_the_routes_list(gateway: Gateway) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(gateway.url("chat"), origin="https://evil.example.net")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    assert b"origin-refused" in refused.value.response.body
    async with connect(gateway.url("chat"), origin="https://app.example.com") as socket:  # type: ignore[arg-type]
        assert (await _whoami(socket))["route"] == "chat"
    # No list on `keyed` and no cors: only the gateway's own host.
    with pytest.raises(InvalidStatus) as refused:
        await connect(gateway.url("keyed"), origin="https://app.example.com")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403


async def test_handshake_runs_the_routes_policies_and_the_principal_rides_along(
    gateway: Gateway,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(gateway.url("keyed"))
    assert refused.value.response.status_code == 401
    assert orjson.loads(refused.value.response.body)["status"] == 401
    with pytest.raises(InvalidStatus) as refused:
        await connect(gateway.url("keyed"), additional_headers={"x-api-key": "rg_wrong"})
    assert refused.value.response.status_code == 401
    key, _ = await gateway.app.policy_state.credentials.api_keys.create({"subject": "svc-chat"})
    async with connect(gateway.url("keyed"), additional_headers={"x-api-key": key}) as socket:
        me = await _whoami(socket)
        assert me["subject"] == "svc-chat"
        assert me["route"] == "keyed"


async def test_an_oversize_message_closes_with_1009(gateway: Gateway) -> None:
    async with connect(gateway.url("chat")) as socket:
        await socket.send("x" * 1024)  # at the limit: fine
        assert await asyncio.wait_for(socket.recv(), 5) == "unknown:" + "x" * 1024
        await socket.send("x" * 1025)
        code, _ = await _closed_with(socket)
    assert code == 1009
    assert gateway.app.websockets.stats()["too_large"] == 1


async def test_over_the_message_rate_closes_with_1008(gateway: Gateway) -> None:
    async with connect(gateway.url("chat")) as socket:
        for _ in range(30):  # burst 20, 5/s
            await socket.send("echo:x")
        code, reason = await _closed_with(socket)
    assert code == 1008
    assert reason is not None
    assert "messages/s" in reason
    assert gateway.app.websockets.stats()["rate_limited"] == 1


async def test_shutdown_says_going_away(gateway: Gateway) -> None:
    async with connect(gateway.url("chat")) as socket:
        await _whoami(socket)
        await gateway.app.websockets.shutdown()
        assert await _closed_with(socket) == (1001, "server shutting down")


def test_websocket_needs_a_worker_route(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "upstreams: {api: {url: 'http://127.0.0.1:9'}}\n"
        "routes:\n"
        "  - name: up\n"
        "    when: {path: /up}\n"
        "    to: {type: upstream, upstream: api}\n"
        "    websocket: {max_message_bytes: 10}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(str(path))
    assert any(
        "routes[0]" in problem and "websocket" in problem for problem in error.value.problems
    )


async def test_a_client_that_does_not_read_gets_its_pushes_in_order_later(
    gateway: Gateway,
) -> None:
    async with (
        connect(gateway.url("chat"), max_queue=1) as slow,
        connect(gateway.url("chat")) as fast,
    ):
        slow_id = (await _whoami(slow))["connection"]
        await _whoami(fast)
        payload = "p" * 60_000
        for i in range(150):  # ~9 MB: more than the socket buffers hold
            await gateway.pusher.send(slow_id, f"{i}:{payload}")
        connections = gateway.app.websockets.connections
        for _ in range(100):
            if connections.by_id[slow_id].queued:
                break
            await asyncio.sleep(0.02)
        assert connections.by_id[slow_id].queued > 0  # its transport is paused: sends wait
        await gateway.pusher.publish("lobby", "meanwhile")
        assert await asyncio.wait_for(fast.recv(), 5) == "meanwhile"  # not held up
        received = [await asyncio.wait_for(slow.recv(), 10) for _ in range(150)]
        assert [str(message).split(":", 1)[0] for message in received] == [
            str(i) for i in range(150)
        ]
        assert await asyncio.wait_for(slow.recv(), 5) == "meanwhile"


async def test_keepalive_pings_and_closes_a_silent_peer_with_1011(tmp_path: Path) -> None:
    bus = MemoryBus(topics=Topics(), node_id="node-k", hub=MemoryHub())
    await bus.connect()
    config = Config(
        state={"dir": str(tmp_path)},
        ingress={"ws_ping_interval_s": 0.2, "ws_ping_timeout_s": 0.3},
        routes=[
            {
                "name": "chat",
                "when": {"path": "/chat"},
                "to": {"type": "worker", "topic": "chat"},
                "websocket": {},
            }
        ],
    )
    app = IngressApp(config, bus)
    try:
        async with _serving(app, config) as port:
            # A raw client that completes the handshake and then never answers a ping.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101")
            opcodes = []
            while True:
                frame = await asyncio.wait_for(reader.readexactly(2), 5)
                body = await reader.readexactly(frame[1] & 0x7F)
                opcodes.append(frame[0] & 0x0F)
                if opcodes[-1] == 0x8:  # close
                    assert int.from_bytes(body[:2], "big") == 1011
                    break
            assert opcodes == [0x9, 0x8]  # one ping, unanswered, then the close
            writer.close()
    finally:
        await app.aclose()
        await bus.close()


async def test_pushes_refuse_what_no_node_could_deliver(gateway: Gateway) -> None:
    for bad in ("no-node-here", "a.b:c", "node-a:", ":x", "node > x:y"):
        with pytest.raises(ValueError, match="not a WebSocket connection id"):
            await gateway.pusher.send(bad, "x")
    with pytest.raises(ValueError, match="close code"):
        await gateway.pusher.close("node-a:0123", code=1001)
    with pytest.raises(ValueError, match="channel name"):
        await gateway.pusher.publish("", "x")
    async with connect(gateway.url("chat")) as socket:  # the node listens once it has one
        await _whoami(socket)
        await gateway.pusher.send("node-a:gone", "to nobody")  # a well-formed id, closed
        for _ in range(100):
            if gateway.app.websockets.stats()["unknown_target"]:
                break
            await asyncio.sleep(0.01)
    assert gateway.app.websockets.stats()["unknown_target"] == 1
