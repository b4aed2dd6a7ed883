"""A `Worker` served by FastStream (the SDK's runtime for team workers).

No `from __future__ import annotations` here: FastStream reads the handler
annotations at runtime to inject the raw message.
"""

from faststream import FastStream
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.nats import NatsBroker, NatsMessage

from contracts.topics import Topics
from workers.sdk.serve import EnvelopeProcessor
from workers.sdk.sockets import Sockets

REPLY_CID_HEADER = "rg-correlation-id"


def build_app(
    url: str, topics: Topics, subject: str, group: str, processor: EnvelopeProcessor
) -> FastStream:
    scheme, _, address = url.partition("://")
    processor.topic = processor.topic or subject
    processor.system = "kafka" if scheme == "kafka" else "nats"
    if scheme == "kafka":
        kafka = KafkaBroker(address.split(","))

        async def kafka_publish(topic: str, data: bytes) -> None:
            await kafka.publish(data, topic=topic)

        processor.sockets = Sockets(kafka_publish, topics, source=processor.source)

        # no_reply: the reply goes out below, by correlation id; FastStream would send
        # the handler's None as a second one. Earliest, like the bus binding: a request
        # published while the group joins is not lost. A 1 s commit interval makes the
        # group visible to the ingress's no-responders check soon on brokers (Tansu)
        # that only report groups with committed offsets.
        @kafka.subscriber(
            subject,
            group_id=group,
            no_reply=True,
            auto_offset_reset="earliest",
            auto_commit_interval_ms=1_000,
        )
        async def on_kafka(msg: KafkaMessage) -> None:
            reply = await processor.process(msg.body)
            if reply is not None:
                await kafka.publish(
                    reply.data,
                    topic=reply.address,
                    headers={REPLY_CID_HEADER: reply.correlation_id},
                )

        return FastStream(kafka)

    nats = NatsBroker(url)

    async def nats_publish(topic: str, data: bytes) -> None:
        await nats.publish(data, subject=topic)

    processor.sockets = Sockets(nats_publish, topics, source=processor.source)

    @nats.subscriber(subject, queue=group, no_reply=True)
    async def on_nats(msg: NatsMessage) -> None:
        reply = await processor.process(msg.body)
        if reply is not None:
            await nats.publish(reply.data, subject=reply.address)

    return FastStream(nats)
