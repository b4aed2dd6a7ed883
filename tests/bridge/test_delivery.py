"""Signed delivery, retries on the schedule, 410, dead letters and redrive, replay,
secret rotation: a real bridge process, a real nats-server, real receivers that verify
each request with the `standardwebhooks` package."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from contracts.envelope import now_ms
from tests.bridge.support import Bridge, Publisher, Receiver, eventually, unique_prefix
from tests.support.processes import NatsServer

pytestmark = [pytest.mark.nats, pytest.mark.e2e]


@pytest.fixture(scope="module")
def prefix() -> str:
    return unique_prefix()


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer, prefix: str
) -> Iterator[Bridge]:
    workdir = tmp_path_factory.mktemp("bridge")
    process = Bridge(workdir, "bridge", nats_server.url, prefix).start().wait_ready()
    yield process
    process.stop()


@pytest.fixture
async def publisher(nats_server: NatsServer, prefix: str) -> AsyncIterator[Publisher]:
    publisher = await Publisher(nats_server.url, prefix).connect()
    yield publisher
    await publisher.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = await Receiver().start()
    yield receiver
    await receiver.stop()


async def test_events_arrive_signed_and_filtered(
    bridge: Bridge, publisher: Publisher, receiver: Receiver
) -> None:
    created = bridge.register(
        receiver.url, events=["order.*"], headers={"X-Tenant": "acme"}, max_concurrency=2
    )
    assert created["secret"].startswith("whsec_")
    receiver.secrets = [created["secret"]]
    wanted = [await publisher.publish("order.created"), await publisher.publish("order.paid")]
    await publisher.publish("invoice.sent")  # not subscribed
    await eventually(lambda: len(receiver.received) >= 2, what="two deliveries")
    await asyncio.sleep(0.5)
    assert sorted(receiver.ids()) == sorted(wanted)
    assert receiver.unverified == []
    first = receiver.received[0]
    assert first.headers["x-tenant"] == "acme"
    assert first.payload["type"] in ("order.created", "order.paid")
    assert first.payload["data"] == {"n": 1}
    shown = bridge.api("GET", f"/endpoints/{created['id']}").json()
    assert "secret" not in shown
    assert "secrets" not in shown
    attempts = bridge.api("GET", f"/endpoints/{created['id']}/attempts").json()
    assert sorted(a["event_id"] for a in attempts) == sorted(wanted)
    assert {a["outcome"] for a in attempts} == {"delivered"}
    assert all(a["status"] == 200 and a["response"] == "answer 200" for a in attempts)


async def test_a_failing_receiver_gets_exactly_the_scheduled_attempts(
    bridge: Bridge, publisher: Publisher, receiver: Receiver
) -> None:
    receiver.answer = lambda n: 503 if n <= 2 else 204
    created = bridge.register(receiver.url)
    receiver.secrets = [created["secret"]]
    event_id = await publisher.publish("order.created")
    await eventually(lambda: len(receiver.received) >= 3, what="three attempts")
    await asyncio.sleep(1.2)  # the whole schedule again: no fourth attempt comes
    assert receiver.ids() == [event_id] * 3
    assert receiver.unverified == []
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    assert 0.35 <= gaps[0] < 1.5, gaps  # schedule: 0 s, 0.4 s, 0.8 s
    assert 0.7 <= gaps[1] < 2.0, gaps
    attempts = bridge.api("GET", f"/endpoints/{created['id']}/attempts").json()
    assert [(a["attempt"], a["outcome"], a["status"]) for a in attempts[::-1]] == [
        (1, "retry", 503),
        (2, "retry", 503),
        (3, "delivered", 204),
    ]


async def test_410_gone_disables_the_endpoint(
    bridge: Bridge, publisher: Publisher, receiver: Receiver
) -> None:
    receiver.answer = lambda n: 410
    created = bridge.register(receiver.url)
    await publisher.publish("order.created")
    await eventually(
        lambda: bridge.api("GET", f"/endpoints/{created['id']}").json()["status"] == "disabled",
        what="endpoint disabled",
    )
    await publisher.publish("order.created")
    await asyncio.sleep(1.0)
    assert len(receiver.received) == 1
    letters = bridge.api("GET", "/dead-letters", params={"endpoint_id": created["id"]}).json()
    assert len(letters) == 1
    assert letters[0]["status"] == 410


async def test_dead_letters_can_be_inspected_and_redriven(
    bridge: Bridge, publisher: Publisher, receiver: Receiver
) -> None:
    healthy = False
    receiver.answer = lambda n: 200 if healthy else 500
    created = bridge.register(receiver.url)
    receiver.secrets = [created["secret"]]
    event_id = await publisher.publish("order.created")
    params = {"endpoint_id": created["id"]}
    await eventually(
        lambda: len(bridge.api("GET", "/dead-letters", params=params).json()) == 1,
        what="a dead letter",
    )
    assert len(receiver.received) == 3  # the whole schedule, then the dead-letter queue
    letter = bridge.api("GET", "/dead-letters", params=params).json()[0]
    assert letter["event_id"] == event_id
    assert letter["attempts"] == 3
    assert letter["status"] == 500
    healthy = True
    response = bridge.api("POST", f"/dead-letters/{letter['seq']}/redrive")
    assert response.status_code == 200, response.text
    await eventually(lambda: len(receiver.received) == 4, what="the redriven delivery")
    assert receiver.ids() == [event_id] * 4  # one webhook-id across retries and redrive
    assert receiver.unverified == []
    assert bridge.api("GET", "/dead-letters", params=params).json() == []
    missing = bridge.api("POST", f"/dead-letters/{letter['seq']}/redrive")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_replay_of_one_event_and_of_a_time_range(
    bridge: Bridge, publisher: Publisher, receiver: Receiver
) -> None:
    created = bridge.register(receiver.url, events=["order.*"])
    receiver.secrets = [created["secret"]]
    since = now_ms()
    first = await publisher.publish("order.created")
    second = await publisher.publish("order.paid")
    await publisher.publish("invoice.sent")
    await eventually(lambda: len(receiver.received) == 2, what="first deliveries")
    one = bridge.api("POST", f"/endpoints/{created['id']}/replay", json={"event_id": first})
    assert one.json() == {"queued": 1}
    await eventually(lambda: len(receiver.received) == 3, what="replayed event")
    assert receiver.ids()[2] == first
    span = {"since_ms": since, "until_ms": now_ms()}
    ranged = bridge.api("POST", f"/endpoints/{created['id']}/replay", json=span)
    assert ranged.json() == {"queued": 2}
    await eventually(lambda: len(receiver.received) == 5, what="replayed range")
    assert sorted(receiver.ids()[3:]) == sorted([first, second])
    assert receiver.unverified == []


async def test_during_a_rotation_both_secrets_sign(
    bridge: Bridge, publisher: Publisher, receiver: Receiver
) -> None:
    created = bridge.register(receiver.url)
    path = f"/endpoints/{created['id']}/rotate-secret"
    rotated = bridge.api("POST", path, json={"grace_s": 60}).json()
    await publisher.publish("order.created")
    await eventually(lambda: len(receiver.received) == 1, what="delivery")
    request = receiver.received[0]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (created["secret"], rotated["secret"]):
        Webhook(secret).verify(request.body, request.headers)  # raises if not signed by it

    # No grace: from now on only the newest secret signs.
    newest = bridge.api("POST", path, json={"grace_s": 0}).json()["secret"]
    await publisher.publish("order.created")
    await eventually(lambda: len(receiver.received) == 2, what="second delivery")
    request = receiver.received[1]
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    Webhook(newest).verify(request.body, request.headers)
    for old in (created["secret"], rotated["secret"]):
        with pytest.raises(WebhookVerificationError):
            Webhook(old).verify(request.body, request.headers)


async def test_management_crud_and_problem_details(bridge: Bridge, receiver: Receiver) -> None:
    created = bridge.register(receiver.url, description="orders")
    endpoint_id = created["id"]
    assert bridge.api("POST", f"/endpoints/{endpoint_id}/pause").json()["status"] == "paused"
    assert bridge.api("POST", f"/endpoints/{endpoint_id}/resume").json()["status"] == "active"
    patched = bridge.api("PATCH", f"/endpoints/{endpoint_id}", json={"events": ["a.*"]})
    assert patched.json()["events"] == ["a.*"]
    listed = [e["id"] for e in bridge.api("GET", "/endpoints").json()]
    assert endpoint_id in listed
    bad = bridge.api("POST", "/endpoints", json={"url": receiver.url, "secret": "nope"})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    reserved = bridge.api(
        "POST", "/endpoints", json={"url": receiver.url, "headers": {"webhook-id": "x"}}
    )
    assert reserved.status_code == 422
    assert bridge.api("DELETE", f"/endpoints/{endpoint_id}").status_code == 204
    gone = bridge.api("GET", f"/endpoints/{endpoint_id}")
    assert gone.status_code == 404
    assert gone.json()["status"] == 404


async def test_each_endpoint_keeps_to_its_rate_and_concurrency(
    bridge: Bridge, publisher: Publisher
) -> None:
    paced = await Receiver().start()
    narrow = Receiver(delay_s=0.2)
    in_flight = 0
    most = 0
    inner = narrow._handle

    async def counting(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await inner(request)
        finally:
            in_flight -= 1

    narrow._handle = counting  # type: ignore[method-assign]
    await narrow.start()
    try:
        bridge.register(paced.url, events=["paced.*"], rate_per_s=10, max_concurrency=8)
        bridge.register(narrow.url, events=["narrow.*"], max_concurrency=2)
        for _ in range(10):
            await publisher.publish("paced.tick")
            await publisher.publish("narrow.tick")
        await eventually(lambda: len(paced.received) == 10, what="paced deliveries")
        await eventually(lambda: len(narrow.received) == 10, what="narrow deliveries")
        arrivals = [r.at for r in paced.received]
        assert arrivals[-1] - arrivals[0] >= 0.85  # 10 per second: 9 gaps of 0.1 s
        assert most == 2
    finally:
        await paced.stop()
        await narrow.stop()
