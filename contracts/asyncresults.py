"""What the ingress and the async runner agree on about async requests: the stream and
its headers, and the records of the result store.

An accepted request is an envelope on the durable stream `<prefix>.async` (msg id = the
async id = the envelope's `id`), with the route's request topic and timeout in headers.
Its record in the bucket `async_results` is `pending` from before the 202 until the
runner replaces it with the `done` answer (status, headers, body); both expire after
`async_requests.result_ttl_s`. The runner then publishes the id on `<prefix>.async.done`
so that a client waiting with `Prefer: wait` is answered at once.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from contracts.bus import Bus
from contracts.config import Config
from contracts.keyvalue import Bucket, open_bucket

TOPIC_HEADER = "rg-topic"  # the route's request topic
TIMEOUT_HEADER = "rg-timeout-ms"  # the route's timeout

RESULTS_BUCKET = "async_results"
IDEMPOTENCY_BUCKET = "idempotency"


@dataclass(slots=True)
class Answer:
    """A stored HTTP answer: an async result, or the reply an idempotency key replays.
    `state` is `pending` until the answer is known; `fingerprint` (idempotency) is the
    hash of the request that holds the key."""

    state: str
    at_ms: int
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    owner: str | None = None
    fingerprint: str | None = None

    @property
    def done(self) -> bool:
        return self.state == "done"

    def encode(self) -> bytes:
        data: dict[str, Any] = {"state": self.state, "at": self.at_ms}
        if self.done:
            data["status"] = self.status
            data["headers"] = self.headers
            data["body"] = base64.b64encode(self.body).decode()
        if self.owner is not None:
            data["owner"] = self.owner
        if self.fingerprint is not None:
            data["fp"] = self.fingerprint
        return orjson.dumps(data)

    @classmethod
    def decode(cls, raw: bytes) -> Answer:
        data = orjson.loads(raw)
        return cls(
            state=data["state"],
            at_ms=data["at"],
            status=data.get("status", 0),
            headers=[(str(n), str(v)) for n, v in data.get("headers", [])],
            body=base64.b64decode(data.get("body", "")),
            owner=data.get("owner"),
            fingerprint=data.get("fp"),
        )


async def open_results(config: Config, bus: Bus, redis: Any | None) -> Bucket:
    return await open_bucket(
        bus, redis, config.bus.prefix, RESULTS_BUCKET, config.async_requests.result_ttl_s
    )


async def open_idempotency(config: Config, bus: Bus, redis: Any | None) -> Bucket:
    return await open_bucket(
        bus, redis, config.bus.prefix, IDEMPOTENCY_BUCKET, config.idempotency.ttl_s
    )
