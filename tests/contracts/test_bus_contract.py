"""The bus contract, written once and run against every binding: memory, NATS, Kafka.

Where a broker cannot do what the others do, the difference is a property of `BusKit`
(Kafka learns "no responders" only at the deadline), not a separate test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from contracts.bus import (
    Backpressure,
    Bus,
    Handler,
    Message,
    NoResponders,
    NotConnected,
    RequestTimeout,
    Subscription,
    create_bus,
)
from contracts.bus.kafka import KafkaSubscription
from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.bus.nats import NatsBus
from contracts.topics import Topics

BINDINGS = [
    pytest.param("memory", id="memory"),
    pytest.param("nats", marks=pytest.mark.nats, id="nats"),
    pytest.param("kafka", marks=pytest.mark.kafka, id="kafka"),
]


class BusKit:
    """Connected buses of one binding on one broker (or hub), closed after the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.binding = url.split("://", 1)[0]
        self._hub = MemoryHub()
        self._buses: list[Bus] = []

    @property
    def no_responders_at_once(self) -> bool:
        """NATS and memory know at publish time; Kafka tells only at the deadline."""
        return self.binding != "kafka"

    async def bus(self, *, max_pending: int = 10_000) -> Bus:
        node_id = uuid.uuid4().hex[:12]
        bus: Bus
        if self.binding == "memory":
            bus = MemoryBus(
                topics=Topics(), node_id=node_id, max_pending=max_pending, hub=self._hub
            )
        else:
            bus = create_bus(self.url, node_id=node_id, max_pending=max_pending)
        await bus.connect()
        self._buses.append(bus)
        return bus

    async def settled(self, *subs: Subscription, same_group: bool = False) -> None:
        """Return once the broker delivers to `subs`: NATS has processed the SUBs sent on
        other connections; Kafka members hold partitions (split, for one group)."""
        for bus in self._buses:
            if isinstance(bus, NatsBus) and bus.connected:
                await bus._client.flush()
        members = [sub for sub in subs if isinstance(sub, KafkaSubscription)]

        def assigned() -> bool:
            owned = [sub.assignment for sub in members]
            if not all(owned):
                return False
            return not same_group or sum(map(len, owned)) == len(frozenset().union(*owned))

        await eventually(assigned, timeout=30)

    async def close(self) -> None:
        for bus in reversed(self._buses):
            await bus.close()


class Collector:
    """A handler that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def data(self) -> list[bytes]:
        return [m.data for m in self.messages]

    async def wait_for(self, count: int) -> list[Message]:
        await eventually(lambda: len(self.messages) >= count)
        return self.messages


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def unique_topic() -> str:
    return f"rg.req.contract-{uuid.uuid4().hex[:12]}"


def unique_group() -> str:
    """Kafka group ids are global, and Tansu keeps a departed member until its session
    times out: a group reused from another test would make the next join wait for it."""
    return f"workers-{uuid.uuid4().hex[:12]}"


def request_body(requester: Bus, correlation_id: str, payload: bytes) -> bytes:
    """The test's stand-in for an envelope: reply address, correlation id, payload."""
    return b"|".join(
        [requester.reply_address(correlation_id).encode(), correlation_id.encode(), payload]
    )


def echo_responder(responder: Bus, delay: float = 0.0) -> Handler:
    async def answer(message: Message) -> None:
        address, correlation_id, payload = message.data.split(b"|", 2)
        await asyncio.sleep(delay)
        await responder.reply(
            address.decode(), b"re:" + payload, correlation_id=correlation_id.decode()
        )

    return answer


async def ignore(message: Message) -> None:
    """A subscriber that never answers: requests to it stay pending."""


@pytest.fixture(params=BINDINGS)
def bus_url(request: pytest.FixtureRequest) -> str:
    binding: str = request.param
    if binding == "memory":
        return "memory://"
    if binding == "nats":
        url: str = request.getfixturevalue("nats_server").url
        return url
    kafka_url: str = request.getfixturevalue("kafka_url")
    return kafka_url


@pytest.fixture
async def kit(bus_url: str) -> AsyncIterator[BusKit]:
    kit = BusKit(bus_url)
    try:
        yield kit
    finally:
        await kit.close()


async def test_published_message_reaches_subscriber_with_data_and_headers(kit: BusKit) -> None:
    publisher, subscriber = await kit.bus(), await kit.bus()
    topic, received = unique_topic(), Collector()
    await kit.settled(await subscriber.subscribe(topic, received))

    await publisher.publish(topic, b"payload", headers={"x-trace": "abc", "x-tenant": "t1"})

    [message] = await received.wait_for(1)
    assert message.topic == topic
    assert message.data == b"payload"
    assert message.headers is not None
    assert message.headers["x-trace"] == "abc"
    assert message.headers["x-tenant"] == "t1"


async def test_members_of_one_group_split_messages_and_handle_each_once(kit: BusKit) -> None:
    publisher, first_bus, second_bus = await kit.bus(), await kit.bus(), await kit.bus()
    topic, group, first, second = unique_topic(), unique_group(), Collector(), Collector()
    subs = await asyncio.gather(
        first_bus.subscribe(topic, first, group=group),
        second_bus.subscribe(topic, second, group=group),
    )
    await kit.settled(*subs, same_group=True)

    sent = [f"m{i}".encode() for i in range(60)]
    for data in sent:
        await publisher.publish(topic, data)

    await eventually(lambda: len(first.messages) + len(second.messages) >= len(sent))
    await asyncio.sleep(0.2)  # a duplicate would arrive now
    assert sorted(first.data + second.data) == sorted(sent)
    assert first.messages, "the first member got nothing"
    assert second.messages, "the second member got nothing"


async def test_subscribers_without_group_each_get_every_message(kit: BusKit) -> None:
    publisher, first_bus, second_bus = await kit.bus(), await kit.bus(), await kit.bus()
    topic, first, second = unique_topic(), Collector(), Collector()
    await kit.settled(
        await first_bus.subscribe(topic, first), await second_bus.subscribe(topic, second)
    )

    sent = [f"m{i}".encode() for i in range(10)]
    for data in sent:
        await publisher.publish(topic, data)

    await first.wait_for(len(sent))
    await second.wait_for(len(sent))
    assert sorted(first.data) == sorted(sent)
    assert sorted(second.data) == sorted(sent)


async def test_200_concurrent_requests_each_get_their_own_reply(kit: BusKit) -> None:
    requester, responder = await kit.bus(), await kit.bus()
    topic = unique_topic()
    await kit.settled(await responder.subscribe(topic, echo_responder(responder)))

    async def ask(i: int) -> bytes:
        correlation_id = uuid.uuid4().hex
        body = request_body(requester, correlation_id, f"q{i}".encode())
        reply = await requester.request(topic, body, correlation_id=correlation_id, timeout=20)
        return reply.data

    replies = await asyncio.gather(*(ask(i) for i in range(200)))

    assert replies == [f"re:q{i}".encode() for i in range(200)]
    assert len(requester.pending) == 0
    assert requester.pending.late == 0


async def test_request_without_subscriber_raises_no_responders(kit: BusKit) -> None:
    requester = await kit.bus()
    timeout = 5.0 if kit.no_responders_at_once else 0.5

    started = time.monotonic()
    with pytest.raises(NoResponders):
        await requester.request(unique_topic(), b"hello", correlation_id="c-1", timeout=timeout)
    elapsed = time.monotonic() - started

    if kit.no_responders_at_once:
        assert elapsed < 0.1
    else:
        assert timeout <= elapsed < timeout + 2.0
    assert len(requester.pending) == 0


async def test_reply_after_deadline_raises_timeout_and_counts_as_late(kit: BusKit) -> None:
    requester, responder = await kit.bus(), await kit.bus()
    topic = unique_topic()
    # In a group: on Kafka only group members count as responders.
    sub = await responder.subscribe(
        topic, echo_responder(responder, delay=0.5), group=unique_group()
    )
    await kit.settled(sub)

    correlation_id = uuid.uuid4().hex
    with pytest.raises(RequestTimeout):
        await requester.request(
            topic,
            request_body(requester, correlation_id, b"slow"),
            correlation_id=correlation_id,
            timeout=0.2,
        )

    await eventually(lambda: requester.pending.late == 1)
    assert len(requester.pending) == 0


async def test_full_pending_map_raises_backpressure(kit: BusKit) -> None:
    requester, responder = await kit.bus(max_pending=1), await kit.bus()
    topic = unique_topic()
    await kit.settled(await responder.subscribe(topic, ignore))
    waiting = asyncio.create_task(
        requester.request(topic, b"first", correlation_id="c-1", timeout=30)
    )
    await eventually(lambda: len(requester.pending) == 1)

    with pytest.raises(Backpressure):
        await requester.request(topic, b"second", correlation_id="c-2", timeout=30)

    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert len(requester.pending) == 0


async def test_handler_exception_does_not_end_the_subscription(kit: BusKit) -> None:
    publisher, subscriber = await kit.bus(), await kit.bus()
    topic, received = unique_topic(), Collector()
    crashed = asyncio.Event()

    async def flaky(message: Message) -> None:
        if message.data == b"boom":
            crashed.set()
            raise RuntimeError("handler bug")
        await received(message)

    await kit.settled(await subscriber.subscribe(topic, flaky))
    await publisher.publish(topic, b"boom")
    await asyncio.wait_for(crashed.wait(), 10)
    await publisher.publish(topic, b"after")

    [message] = await received.wait_for(1)
    assert message.data == b"after"


async def test_close_fails_pending_requests(kit: BusKit) -> None:
    requester, responder = await kit.bus(), await kit.bus()
    topic = unique_topic()
    await kit.settled(await responder.subscribe(topic, ignore))
    waiting = asyncio.create_task(
        requester.request(topic, b"question", correlation_id="c-1", timeout=30)
    )
    await eventually(lambda: len(requester.pending) == 1)

    await requester.close()

    with pytest.raises(NotConnected):
        await waiting
    assert not requester.connected


async def test_publish_after_close_raises_not_connected(kit: BusKit) -> None:
    bus = await kit.bus()
    await bus.close()

    with pytest.raises(NotConnected):
        await bus.publish(unique_topic(), b"late")
