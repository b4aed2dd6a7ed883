"""The envelope: one message shape for requests, replies and events (CloudEvents names)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

REQUEST = "http.request"
REPLY = "http.reply"
EVENT_PREFIX = "event."


_random_bits = random.getrandbits


def new_id() -> str:
    """A 24-hex-digit random id: unique enough for messages, cheaper than uuid4().

    Not a secret (correlation ids are shown to clients), so the Mersenne Twister
    (seeded from os.urandom at start and again in a forked child) rather than a
    system call per id, which also hands the GIL to any other thread."""
    return f"{_random_bits(96):024x}"


def first_header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of `name` in (lower-case name, value) pairs."""
    for key, value in headers:
        if key == name:
            return value
    return None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Principal:
    """Who the edge authenticated; workers may rely on it."""

    subject: str
    tenant: str | None = None
    roles: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    tier: str | None = None
    authmethod: str | None = None


@dataclass(slots=True)
class HttpInfo:
    """The HTTP side of a request (method, target, headers) or a reply (status, headers)."""

    method: str = ""
    scheme: str = "http"
    host: str = ""
    path: str = ""
    query: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    status: int = 0
    client: str = ""
    params: dict[str, str] = field(default_factory=dict)
    apiversion: str | None = None

    def header(self, name: str) -> str | None:
        """First value of a header (names are stored lower-case)."""
        return first_header(self.headers, name)


@dataclass(slots=True)
class Envelope:
    """A message on the bus. `data` is the body; `http` is set for HTTP requests and replies."""

    id: str
    source: str
    type: str
    time: int
    subject: str | None = None
    datacontenttype: str | None = None
    data: bytes = b""
    correlationid: str = ""
    replyto: str | None = None
    deadline: int = 0
    traceparent: str | None = None
    tracestate: str | None = None
    principal: Principal | None = None
    http: HttpInfo | None = None
    slip: list[str] = field(default_factory=list)
    attempt: int = 1
    idempotencykey: str | None = None
    specversion: str = "1.0"

    def expired(self, at_ms: int | None = None) -> bool:
        """True once the deadline has passed: nobody waits for the reply any more."""
        return self.deadline > 0 and (now_ms() if at_ms is None else at_ms) >= self.deadline

    def reply(
        self,
        *,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        data: bytes = b"",
        source: str,
        datacontenttype: str | None = None,
    ) -> Envelope:
        """The reply to this request: same correlation id, trace and subject."""
        return Envelope(
            id=new_id(),
            source=source,
            type=REPLY,
            time=now_ms(),
            subject=self.subject,
            datacontenttype=datacontenttype,
            data=data,
            correlationid=self.correlationid,
            deadline=self.deadline,
            traceparent=self.traceparent,
            tracestate=self.tracestate,
            http=HttpInfo(status=status, headers=headers or []),
        )
