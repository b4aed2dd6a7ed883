"""The bridge on a Kafka bus, its state in Redis (`state.url`): signed delivery, retries
on the schedule, dead letters and redrive, endpoints that survive a restart. The same
receivers as on NATS verify every request with `standardwebhooks`."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.bridge.support import Bridge, Publisher, Receiver, eventually, unique_prefix
from tests.support.processes import RedisServer

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.e2e, pytest.mark.slow]


async def test_the_bridge_delivers_from_kafka_with_its_state_in_redis(
    tmp_path: Path, kafka_url: str, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    first = Bridge(tmp_path, "first", kafka_url, prefix, redis_server.url).start()
    second: Bridge | None = None
    flaky = await Receiver(answer=lambda n: 503 if n <= 2 else 200).start()
    broken = await Receiver(answer=lambda n: 500).start()
    publisher = await Publisher(kafka_url, prefix).connect()
    try:
        first.wait_ready()
        flaky_endpoint = first.register(flaky.url, events=["order.*"])
        flaky.secrets = [flaky_endpoint["secret"]]
        broken_endpoint = first.register(broken.url, events=["invoice.*"])
        broken.secrets = [broken_endpoint["secret"]]

        order = await publisher.publish("order.created")
        invoice = await publisher.publish("invoice.sent")
        await eventually(lambda: len(flaky.received) == 3, timeout=30, what="three attempts")
        assert flaky.ids() == [order] * 3
        assert flaky.unverified == []
        params = {"endpoint_id": broken_endpoint["id"]}
        await eventually(
            lambda: len(first.api("GET", "/dead-letters", params=params).json()) == 1,
            timeout=30,
            what="a dead letter",
        )
        assert broken.ids() == [invoice] * 3
        attempts = first.api("GET", f"/endpoints/{flaky_endpoint['id']}/attempts").json()
        assert [a["outcome"] for a in attempts] == ["delivered", "retry", "retry"]

        first.signal(signal.SIGKILL)
        second = Bridge(tmp_path, "second", kafka_url, prefix, redis_server.url).start()
        second.wait_ready()
        listed = {e["id"] for e in second.api("GET", "/endpoints").json()}
        assert listed == {flaky_endpoint["id"], broken_endpoint["id"]}
        letter = second.api("GET", "/dead-letters", params=params).json()[0]
        broken.answer = lambda n: 200
        assert second.api("POST", f"/dead-letters/{letter['seq']}/redrive").status_code == 200
        await eventually(lambda: len(broken.received) == 4, timeout=30, what="the redrive")
        assert broken.ids()[-1] == invoice
        assert broken.unverified == []
    finally:
        await publisher.close()
        await flaky.stop()
        await broken.stop()
        first.stop()
        if second is not None:
            second.stop()
