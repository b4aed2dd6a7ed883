"""The SDK teams use to add a worker for a topic: `Worker`, `Request`, `Response`."""

from workers.sdk.messages import Request, Response
from workers.sdk.serve import EnvelopeProcessor, Reply
from workers.sdk.worker import Worker, load_worker, serve_on_bus

__all__ = [
    "EnvelopeProcessor",
    "Reply",
    "Request",
    "Response",
    "Worker",
    "load_worker",
    "serve_on_bus",
]
