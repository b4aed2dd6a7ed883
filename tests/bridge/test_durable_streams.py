"""Durable streams (`publish_durable`, `consume`) against every binding: memory, NATS
JetStream, Kafka. What one broker cannot do is a property of the test, not a skip."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from contracts.bus import Bus, create_bus
from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.bus.streams import Delivered, RetryLater, Streams, durable
from contracts.topics import Topics
from tests.support.processes import NatsServer

BINDINGS = [
    pytest.param("memory", id="memory"),
    pytest.param("nats", marks=pytest.mark.nats, id="nats"),
    pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.slow], id="kafka"),
]


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Bus]]:
    binding: str = request.param
    hub = MemoryHub()
    url = "memory://"
    if binding == "nats":
        url = request.getfixturevalue("nats_server").url
    elif binding == "kafka":
        url = request.getfixturevalue("kafka_url")
    made: list[Bus] = []

    def make() -> Bus:
        node = uuid.uuid4().hex[:8]
        bus: Bus = (
            MemoryBus(topics=Topics(), node_id=node, hub=hub)
            if binding == "memory"
            else create_bus(url, node_id=node)
        )
        made.append(bus)
        return bus

    yield make
    for bus in reversed(made):
        await bus.close()


class Recorder:
    def __init__(self, fail_first: set[bytes] | None = None) -> None:
        self.seen: list[Delivered] = []
        self.fail_first = fail_first or set()

    async def __call__(self, message: Delivered) -> None:
        self.seen.append(message)
        if message.data in self.fail_first and message.attempt == 1:
            raise RetryLater(0.2)

    def handled(self) -> list[bytes]:
        done = []
        for m in self.seen:
            if m.data not in self.fail_first or m.attempt > 1:
                done.append(m.data)
        return done


@pytest.mark.parametrize("buses", BINDINGS, indirect=True)
async def test_consume_delivers_every_message_and_retries_on_request(
    buses: Callable[[], Bus],
) -> None:
    bus = buses()
    await bus.connect()
    streams = durable(bus)
    topic = f"rg.test.{uuid.uuid4().hex[:8]}"
    for n in range(5):
        await streams.publish_durable(topic, f"m{n}".encode(), msg_id=f"id-{n}")
    recorder = Recorder(fail_first={b"m2"})
    consumer = await streams.consume(topic, "d1", recorder, concurrency=4, ack_wait_s=5)
    await eventually(lambda: len(recorder.handled()) == 5)
    await consumer.stop()
    assert sorted(recorder.handled()) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    retried = [m for m in recorder.seen if m.data == b"m2"]
    assert [m.attempt for m in retried] == [1, 2]


@pytest.mark.parametrize("buses", BINDINGS, indirect=True)
async def test_a_durable_consumer_resumes_where_it_left_off(buses: Callable[[], Bus]) -> None:
    bus = buses()
    await bus.connect()
    streams = durable(bus)
    topic = f"rg.test.{uuid.uuid4().hex[:8]}"
    await streams.publish_durable(topic, b"before", msg_id="a")
    first = Recorder()
    consumer = await streams.consume(topic, "d2", first)
    await eventually(lambda: len(first.seen) == 1)
    await consumer.stop()
    await streams.publish_durable(topic, b"while-away", msg_id="b")
    second = Recorder()
    consumer = await streams.consume(topic, "d2", second)
    await eventually(lambda: len(second.seen) == 1)
    await asyncio.sleep(0.3)
    await consumer.stop()
    assert [m.data for m in second.seen] == [b"while-away"]


@pytest.mark.parametrize("buses", BINDINGS[:2], indirect=True)
async def test_a_repeated_msg_id_is_stored_once(buses: Callable[[], Bus]) -> None:
    """Kafka dedupes only its producer's own retries (see contracts/bus/kafka.py)."""
    bus = buses()
    await bus.connect()
    streams = durable(bus)
    topic = f"rg.test.{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        await streams.publish_durable(topic, b"once", msg_id="same")
    await streams.publish_durable(topic, b"other", msg_id="other")
    recorder = Recorder()
    consumer = await streams.consume(topic, "d3", recorder)
    await eventually(lambda: len(recorder.seen) == 2)
    await asyncio.sleep(0.3)
    await consumer.stop()
    assert [m.data for m in recorder.seen] == [b"once", b"other"]


@pytest.mark.nats
async def test_jetstream_redelivers_what_a_dead_consumer_never_acknowledged(
    nats_server: NatsServer,
) -> None:
    """The consumer's connection dies mid-handler: after ack_wait the message comes again."""
    topic = f"rg.test.{uuid.uuid4().hex[:8]}"
    dying = create_bus(nats_server.url, node_id="dying")
    await dying.connect()
    assert isinstance(dying, Streams)
    started = asyncio.Event()

    async def hang(message: Delivered) -> None:
        started.set()
        await asyncio.sleep(3600)

    await dying.publish_durable(topic, b"precious", msg_id="p")
    await dying.consume(topic, "d4", hang, ack_wait_s=1.0)
    await asyncio.wait_for(started.wait(), 10)
    await dying._client.close()  # type: ignore[attr-defined]  # the process "dies"

    survivor = create_bus(nats_server.url, node_id="survivor")
    await survivor.connect()
    try:
        recorder = Recorder()
        consumer = await durable(survivor).consume(topic, "d4", recorder, ack_wait_s=1.0)
        await eventually(lambda: len(recorder.seen) == 1, timeout=10)
        await consumer.stop()
        assert recorder.seen[0].data == b"precious"
        assert recorder.seen[0].attempt == 2
    finally:
        await survivor.close()
        await dying.close()


@pytest.mark.parametrize("buses", BINDINGS, indirect=True)
async def test_stored_messages_can_be_read_by_position_and_by_time(
    buses: Callable[[], Bus],
) -> None:
    bus = buses()
    await bus.connect()
    streams = durable(bus)
    topic = f"rg.test.{uuid.uuid4().hex[:8]}"
    await streams.publish_durable(topic, b"early", msg_id="e")
    await asyncio.sleep(0.05)
    since = time.time_ns() // 1_000_000
    await streams.publish_durable(topic, b"one", msg_id="1")
    await streams.publish_durable(topic, b"two", msg_id="2")
    until = time.time_ns() // 1_000_000
    await asyncio.sleep(0.05)
    await streams.publish_durable(topic, b"late", msg_id="l")

    recorder = Recorder()
    consumer = await streams.consume(topic, "reader", recorder)
    await eventually(lambda: len(recorder.seen) == 4)
    await consumer.stop()
    for seen in recorder.seen:
        assert await streams.read_one(topic, seen.partition, seen.sequence) == seen.data
    assert await streams.read_one(topic, 0, 10_000) is None

    window = await streams.read_range(topic, since_ms=since, until_ms=until, limit=10)
    assert sorted(window) == [b"one", b"two"]
    assert len(await streams.read_range(topic, since_ms=since, until_ms=until, limit=1)) == 1
