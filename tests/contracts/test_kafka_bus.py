"""What only the Kafka binding does: idempotence fallback, topic creation, its size and
connection errors, and reading its URL. The shared behaviour is in test_bus_contract."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from contracts.bus import NotConnected, PayloadTooLarge, create_bus
from contracts.bus.errors import TopicUnavailable
from contracts.bus.kafka import KafkaBus, bootstrap_servers
from contracts.config import KafkaOptions, MiB
from contracts.topics import Topics
from tests.support.processes import TansuBroker, free_port


def kafka_bus(url: str, **options: Any) -> KafkaBus:
    return KafkaBus(
        url, topics=Topics(), node_id=uuid.uuid4().hex[:12], options=KafkaOptions(**options)
    )


def unique_topic() -> str:
    return f"rg.evt.kafka-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def tansu(workdir: Path) -> Iterator[TansuBroker]:
    """A Tansu broker of our own: these tests are about Tansu, whatever KAFKA_BOOTSTRAP_SERVERS
    says."""
    broker = TansuBroker(workdir).start()
    yield broker
    broker.stop()


@pytest.fixture
async def admin(kafka_url: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(kafka_url))
    await client.start()
    yield client
    await client.close()


def test_url_lists_bootstrap_servers_with_default_port() -> None:
    assert bootstrap_servers("kafka://a:9093,b:9094") == ["a:9093", "b:9094"]
    assert bootstrap_servers("kafka://broker") == ["broker:9092"]
    for bad in ("nats://a:4222", "kafka://a:port", "kafka://user:pw@a:9092"):
        with pytest.raises(ValueError, match="kafka"):
            bootstrap_servers(bad)


def test_idempotence_on_without_acks_all_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="acks"):
        kafka_bus("kafka://127.0.0.1:9092", idempotence="on", acks=1)


def test_create_bus_passes_kafka_options() -> None:
    bus = create_bus(
        "kafka://127.0.0.1:9092", node_id="n1", kafka_options=KafkaOptions(partitions=7)
    )
    assert isinstance(bus, KafkaBus)
    assert bus.options.partitions == 7


@pytest.mark.kafka
async def test_auto_idempotence_falls_back_on_tansu_with_one_warning(
    tansu: TansuBroker, caplog: pytest.LogCaptureFixture
) -> None:
    bus = kafka_bus(tansu.url, idempotence="auto")
    with caplog.at_level(logging.WARNING, logger="relaygate.bus.kafka"):
        await bus.connect()
    try:
        assert bus.connected
        assert not bus.idempotent
        warnings = [r for r in caplog.records if r.name == "relaygate.bus.kafka"]
        assert len(warnings) == 1
        assert "rejects idempotent producers" in warnings[0].getMessage()
        await bus.publish(unique_topic(), b"still published")
    finally:
        await bus.close()


@pytest.mark.kafka
async def test_idempotence_on_fails_clearly_on_tansu(tansu: TansuBroker) -> None:
    bus = kafka_bus(tansu.url, idempotence="on")
    with pytest.raises(NotConnected, match="rejects idempotent producers"):
        await bus.connect()
    assert not bus.connected


@pytest.mark.kafka
async def test_missing_topic_is_created_with_configured_partitions(
    kafka_url: str, admin: AIOKafkaAdminClient
) -> None:
    topic = unique_topic()
    bus = kafka_bus(kafka_url, partitions=2)
    await bus.connect()
    try:
        await bus.publish(topic, b"first")
        await bus.publish(topic, b"second")  # known now: no second CreateTopics
    finally:
        await bus.close()

    [described] = await admin.describe_topics([topic])
    assert described["error_code"] == 0
    assert len(described["partitions"]) == 2


@pytest.mark.kafka
async def test_missing_topic_without_create_topics_fails_fast(kafka_url: str) -> None:
    bus = kafka_bus(kafka_url, create_topics=False)
    await bus.connect()
    try:
        started = time.monotonic()
        with pytest.raises(TopicUnavailable, match="create_topics is off"):
            await bus.publish(unique_topic(), b"nowhere")

        async def ignore(message: object) -> None:
            """Never called."""

        with pytest.raises(TopicUnavailable, match="create_topics is off"):
            await bus.subscribe(unique_topic(), ignore)
        assert time.monotonic() - started < 5
    finally:
        await bus.close()


@pytest.mark.kafka
async def test_message_above_max_message_bytes_raises_payload_too_large(kafka_url: str) -> None:
    bus = kafka_bus(kafka_url, max_message_bytes=MiB)
    await bus.connect()
    try:
        topic = unique_topic()
        with pytest.raises(PayloadTooLarge):
            await bus.publish(topic, b"x" * (MiB + 1))
        await bus.publish(topic, b"x" * (MiB // 2))  # the bus still works
    finally:
        await bus.close()


async def test_connect_to_dead_port_raises_not_connected_quickly() -> None:
    bus = kafka_bus(f"kafka://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(NotConnected, match="cannot reach Kafka"):
        await bus.connect()
    assert time.monotonic() - started < 5
    assert not bus.connected
