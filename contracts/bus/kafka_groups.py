"""Does any consumer group consume a topic? Kafka's stand-in for NATS "no responders".

Apache Kafka lists live groups and their members' subscriptions. Tansu lists only groups
that committed offsets, reports members without subscriptions and keeps members that
left, so there the answer reads "a group once committed offsets on this topic" (a group
subscription commits its start position when it joins, for exactly this).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata


async def consumed_by_a_group(
    admin: AIOKafkaAdminClient, producer: AIOKafkaProducer, topic: str
) -> bool:
    listed = await admin.list_consumer_groups()
    group_ids = [str(group_id) for group_id, protocol_type in listed if protocol_type == "consumer"]
    if not group_ids:
        return False
    # One group per DescribeGroups request: Tansu answers several with a frame
    # aiokafka cannot decode.
    responses = await asyncio.gather(
        *(admin.describe_consumer_groups([group_id]) for group_id in group_ids)
    )
    without_subscriptions = []
    for response in responses:
        for error_code, group_id, _state, _type, _protocol, members, *_ in response[0].groups:
            if error_code or not members:
                continue
            subscribed = _subscribed_topics(members)
            if subscribed is None:
                without_subscriptions.append(str(group_id))
            elif topic in subscribed:
                return True
    if not without_subscriptions:
        return False
    # The broker does not say what the members subscribe to (Tansu): committed
    # offsets on the topic are the evidence left.
    known: set[int] = await producer.partitions_for(topic)
    partitions = [TopicPartition(topic, p) for p in known]
    for group_id in without_subscriptions:
        offsets = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
        if any(meta.offset >= 0 for meta in offsets.values()):
            return True
    return False


def _subscribed_topics(members: Sequence[Any]) -> set[str] | None:
    """Topics the members of a consumer group subscribe to; None if any member's
    metadata is missing. DescribeGroups v0-v3 members end with (metadata, assignment)."""
    topics: set[str] = set()
    for member in members:
        metadata = member[-2]
        if not metadata:
            return None
        topics.update(ConsumerProtocolMemberMetadata.decode(metadata).subscription)
    return topics
