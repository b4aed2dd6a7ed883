"""The SDK teams use to add a worker for a topic: `Worker`, `Request`, `Response`, and
for WebSockets `SocketEvent` and `Sockets`."""

from workers.sdk.messages import Request, Response
from workers.sdk.serve import EnvelopeProcessor, Reply
from workers.sdk.sockets import SocketEvent, Sockets
from workers.sdk.worker import Worker, load_worker, serve_on_bus

__all__ = [
    "EnvelopeProcessor",
    "Reply",
    "Request",
    "Response",
    "SocketEvent",
    "Sockets",
    "Worker",
    "load_worker",
    "serve_on_bus",
]
