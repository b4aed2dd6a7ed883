"""`Worker`: what a product team writes to serve a topic.

    from workers.sdk import Request, Response, Worker

    worker = Worker("orders")

    @worker.handler
    async def handle(request: Request) -> Response:
        return Response.json({"order": request.params["id"]})

`relaygate worker module --target myteam.orders:worker` runs it on FastStream; the
built-in workers run the same `EnvelopeProcessor` on the lighter bus facade.
`@worker.socket` adds a handler for the WebSocket messages of routes with
`websocket:` (see workers/sdk/sockets.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from contracts.bus import Bus, Message, Subscription
from contracts.codec import EnvelopeCodec
from contracts.telemetry.metrics import BUS_PUBLISH
from contracts.topics import Topics, check_name
from workers.sdk.serve import EnvelopeProcessor, HandlerFn
from workers.sdk.sockets import SocketHandlerFn, Sockets

if TYPE_CHECKING:
    from faststream import FastStream

_PUBLISHED_REPLY = BUS_PUBLISH.labels("reply")


class Worker:
    def __init__(
        self,
        topic: str,
        *,
        group: str | None = None,
        concurrency: int = 256,
        otel_api: bool = True,
    ) -> None:
        """`otel_api=False`: the handler makes no spans with the OpenTelemetry API, so
        its CONSUMER span need not be made that API's current span (~5 µs a message)."""
        self.topic = check_name(topic)
        self.group = group or f"workers.{topic}"
        self.concurrency = concurrency
        self.otel_api = otel_api
        self._handler: HandlerFn | None = None
        self._socket: SocketHandlerFn | None = None

    def handler(self, fn: HandlerFn) -> HandlerFn:
        self._handler = fn
        return fn

    def socket(self, fn: SocketHandlerFn) -> SocketHandlerFn:
        """The handler of WebSocket opens, messages and closes on this topic."""
        self._socket = fn
        return fn

    def processor(
        self, source: str, codec: EnvelopeCodec | None = None, sockets: Sockets | None = None
    ) -> EnvelopeProcessor:
        if self._handler is None and self._socket is None:
            raise RuntimeError(
                f"worker for {self.topic!r} has no handler: use @worker.handler or @worker.socket"
            )
        processor = EnvelopeProcessor(
            self._handler,
            codec=codec or EnvelopeCodec(),
            source=source,
            on_socket=self._socket,
            sockets=sockets,
        )
        processor.otel_api = self.otel_api
        return processor

    async def serve(self, bus: Bus, codec: EnvelopeCodec | None = None) -> Subscription:
        """Subscribe on the bus facade (the built-in workers' path)."""
        return await serve_on_bus(
            bus,
            bus.topics.request(self.topic),
            self.group,
            self.processor(f"relaygate://worker/{bus.node_id}", codec, Sockets.on_bus(bus, codec)),
            self.concurrency,
        )

    def faststream_app(self, url: str, *, prefix: str = "rg", node_id: str = "sdk") -> FastStream:
        """A FastStream application serving this worker on `nats://` or `kafka://`."""
        from workers.sdk.faststream_app import build_app

        topics = Topics(prefix)
        processor = self.processor(f"relaygate://worker/{node_id}")
        return build_app(url, topics, topics.request(self.topic), self.group, processor)


async def serve_on_bus(
    bus: Bus, topic: str, group: str, processor: EnvelopeProcessor, concurrency: int = 256
) -> Subscription:
    processor.topic = processor.topic or topic
    processor.system = bus.system

    async def on_message(message: Message) -> None:
        reply = await processor.process(message.data)
        if reply is not None:
            started = time.perf_counter()
            await bus.reply(reply.address, reply.data, correlation_id=reply.correlation_id)
            _PUBLISHED_REPLY.observe(time.perf_counter() - started)

    return await bus.subscribe(topic, on_message, group=group, concurrency=concurrency)


def load_worker(target: str) -> Worker:
    """`package.module:attribute` -> the Worker it names."""
    import importlib
    import sys

    # Like `uvicorn app:app`: the team's package is usually in the current folder.
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, ".")
    module_name, _, attr = target.partition(":")
    module: Any = importlib.import_module(module_name)
    worker = getattr(module, attr, None)
    if not isinstance(worker, Worker):
        raise TypeError(f"{target} is not a relaygate Worker (got {type(worker).__name__})")
    return worker
