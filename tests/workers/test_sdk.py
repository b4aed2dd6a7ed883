"""The worker SDK: a team's handler served on FastStream over a real broker, and the
envelope rules every worker follows (deadline skip, exception -> 500)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from contracts.bus import Bus, NoResponders, create_bus
from contracts.codec import EnvelopeCodec
from contracts.envelope import REQUEST, Envelope, HttpInfo, new_id, now_ms
from contracts.topics import Topics
from tests.support.processes import NatsServer
from workers.sdk import Request, Response, Worker

codec = EnvelopeCodec()


def _orders_worker() -> Worker:
    worker = Worker("orders")

    @worker.handler
    async def handle(request: Request) -> Response:
        if request.path.endswith("/fail"):
            raise ValueError("no such order")
        return Response.json(
            {"order": request.params["id"], "body": request.json(), "route": request.route},
            status=201,
            headers=[("x-order", "1"), ("x-order", "2")],
        )

    return worker


def _request(bus: Bus, path: str, *, deadline_ms: int = 5_000) -> tuple[str, bytes]:
    cid = new_id()
    env = Envelope(
        id=new_id(),
        source="test",
        type=REQUEST,
        time=now_ms(),
        subject="orders",
        data=b'{"qty": 2}',
        correlationid=cid,
        replyto=bus.reply_address(cid),
        deadline=now_ms() + deadline_ms,
        http=HttpInfo(method="POST", path=path, params={"id": "7"}),
    )
    return cid, codec.encode(env)


@pytest.fixture
async def requester(nats_server: NatsServer) -> AsyncIterator[Bus]:
    bus = create_bus(nats_server.url, node_id=f"req-{new_id()[:8]}", topics=Topics())
    await bus.connect()
    yield bus
    await bus.close()


@pytest.mark.nats
async def test_faststream_worker_answers_over_nats(nats_server: NatsServer, requester: Bus) -> None:
    app = _orders_worker().faststream_app(nats_server.url)
    await app.start()
    try:
        # start() returns once SUB is sent, not once the server has it: until then a
        # request meets "no responders". Wait for the subscription, with a bound.
        for _ in range(50):
            cid, data = _request(requester, "/orders/7")
            try:
                answer = await requester.request(
                    "rg.req.orders", data, correlation_id=cid, timeout=5
                )
                break
            except NoResponders:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the FastStream worker never subscribed")
        reply = codec.decode(answer.data)
        assert reply.correlationid == cid
        assert reply.http is not None
        assert reply.http.status == 201
        assert reply.http.headers[-2:] == [("x-order", "1"), ("x-order", "2")]
        assert reply.data == b'{"order":"7","body":{"qty":2},"route":"orders"}'

        cid, data = _request(requester, "/orders/fail")
        failed = codec.decode(
            (await requester.request("rg.req.orders", data, correlation_id=cid, timeout=5)).data
        )
        assert failed.http is not None
        assert failed.http.status == 500
        assert b"ValueError" in failed.data
    finally:
        await app.stop()


async def test_expired_envelope_is_skipped_without_calling_the_handler() -> None:
    calls = 0
    worker = Worker("orders")

    @worker.handler
    async def handle(request: Request) -> Response:
        nonlocal calls
        calls += 1
        return Response.text("done")

    processor = worker.processor("test")
    bus = create_bus("memory://", node_id="n")
    _, expired = _request(bus, "/orders/7", deadline_ms=-1)
    assert await processor.process(expired) is None
    assert processor.expired == 1
    assert calls == 0
    _, fresh = _request(bus, "/orders/7")
    reply = await processor.process(fresh)
    assert reply is not None
    assert calls == 1


async def test_undecodable_message_is_dropped_and_counted() -> None:
    processor = _orders_worker().processor("test")
    assert await processor.process(b"not an envelope") is None
    assert processor.undecodable == 1


def test_worker_without_handler_says_so() -> None:
    with pytest.raises(RuntimeError, match="has no handler"):
        Worker("orders").processor("test")
