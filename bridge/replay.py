"""Delivering again: one event, the events of a time range, or dead letters. Each goes
onto the endpoint's replay topic, which its own durable consumer delivers with the same
signing, retries and dead-lettering as the event stream (the webhook-id stays the
event's id, so receivers that deduplicate see a replay as the event it is)."""

from __future__ import annotations

import base64
import os

import orjson

from bridge.delivery import Deliverer, event_type
from bridge.model import Attempt, DeadLetter, Endpoint, event_matcher
from contracts.codec import CodecError

MAX_REPLAY = 10_000


class NotFound(LookupError):
    pass


async def replay_event(deliverer: Deliverer, endpoint: Endpoint, event_id: str) -> int:
    """Replay one event this endpoint was sent before (its attempt log says where it is)."""
    found: Attempt | None = None
    for entry in await deliverer.attempts.scan(endpoint.id, limit=MAX_REPLAY, newest_first=True):
        attempt = Attempt.model_validate_json(entry.data)
        if attempt.event_id == event_id and not attempt.replayed:
            found = attempt
            break
    if found is None:
        raise NotFound(
            f"event {event_id} is not in the attempt log of {endpoint.id}: "
            "replay a time range (since_ms, until_ms) instead"
        )
    data = await deliverer.streams.read_one(
        deliverer.events_topic, found.event_partition, found.event_seq
    )
    if data is None:
        raise NotFound(f"event {event_id} is no longer in the event stream")
    await _enqueue(deliverer, endpoint.id, data, event_id)
    return 1


async def replay_range(
    deliverer: Deliverer, endpoint: Endpoint, since_ms: int, until_ms: int
) -> int:
    """Replay the stored events published in [since_ms, until_ms] that match the endpoint."""
    stored = await deliverer.streams.read_range(
        deliverer.events_topic, since_ms=since_ms, until_ms=until_ms, limit=MAX_REPLAY
    )
    matcher = event_matcher(endpoint.events)
    queued = 0
    for data in stored:
        try:
            envelope = deliverer.codec.decode(data)
        except CodecError:
            continue
        if matcher.fullmatch(event_type(envelope)):
            await _enqueue(deliverer, endpoint.id, data, envelope.id)
            queued += 1
    return queued


async def dead_letters(
    deliverer: Deliverer, endpoint_id: str | None, limit: int
) -> list[DeadLetter]:
    entries = await deliverer.dead_letters.scan(endpoint_id, limit=limit)
    return [DeadLetter(seq=e.seq, **_without_envelope(orjson.loads(e.data))) for e in entries]


async def redrive(deliverer: Deliverer, seq: int) -> str:
    """Put one dead letter back on its endpoint's replay topic; the endpoint's id."""
    entry = await deliverer.dead_letters.get(seq)
    if entry is None:
        raise NotFound(f"no dead letter {seq}")
    record = orjson.loads(entry.data)
    endpoint_id: str = record["endpoint_id"]
    await _enqueue(deliverer, endpoint_id, base64.b64decode(record["envelope"]), record["event_id"])
    await deliverer.dead_letters.remove(seq)
    return endpoint_id


async def _enqueue(deliverer: Deliverer, endpoint_id: str, data: bytes, event_id: str) -> None:
    await deliverer.streams.publish_durable(
        deliverer.replay_topic(endpoint_id),
        data,
        msg_id=f"{event_id}.{os.urandom(6).hex()}",
    )


def _without_envelope(record: dict[str, object]) -> dict[str, object]:
    record.pop("envelope", None)
    return record
