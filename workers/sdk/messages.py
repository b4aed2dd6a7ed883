"""What a worker handler receives (`Request`) and returns (`Response`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from contracts import problems
from contracts.envelope import Envelope, HttpInfo, Principal, now_ms


@dataclass(slots=True)
class EnvelopeView:
    """What every handler's argument reads from the envelope it came in."""

    envelope: Envelope

    @property
    def route(self) -> str | None:
        return self.envelope.subject

    @property
    def principal(self) -> Principal | None:
        """Who authenticated at the edge (None on a route without authentication)."""
        return self.envelope.principal

    def json(self) -> Any:
        return orjson.loads(self.envelope.data)


@dataclass(slots=True)
class Request(EnvelopeView):
    """An HTTP request as the ingress saw it, plus what the edge learned (principal)."""

    @property
    def http(self) -> HttpInfo:
        return self.envelope.http or HttpInfo()

    @property
    def method(self) -> str:
        return self.http.method

    @property
    def path(self) -> str:
        """Raw path, still percent-encoded."""
        return self.http.path

    @property
    def query(self) -> str:
        return self.http.query

    @property
    def headers(self) -> list[tuple[str, str]]:
        """(lower-case name, value) in arrival order, repeats kept."""
        return self.http.headers

    def header(self, name: str) -> str | None:
        return self.http.header(name.lower())

    @property
    def params(self) -> dict[str, str]:
        return self.http.params

    @property
    def body(self) -> bytes:
        return self.envelope.data

    @property
    def correlation_id(self) -> str:
        return self.envelope.correlationid

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        if not self.envelope.deadline:
            return None
        return max(0.0, (self.envelope.deadline - now_ms()) / 1000)


@dataclass(slots=True)
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        return cls(
            status, [("content-type", "application/json"), *(headers or [])], orjson.dumps(data)
        )

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, [("content-type", "text/plain; charset=utf-8")], text.encode())

    @classmethod
    def problem(
        cls,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        correlation_id: str | None = None,
    ) -> Response:
        return cls(
            status,
            [("content-type", problems.CONTENT_TYPE)],
            problems.problem(status, slug, title, detail, correlation_id=correlation_id),
        )
