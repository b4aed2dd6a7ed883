"""Webhook endpoints as stored (with secrets) and as the admin API shows them."""

from __future__ import annotations

import fnmatch
import re
import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.signing import secret_key

Status = Literal["active", "paused", "disabled"]

_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection"}
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_EVENT_FILTER = r"^[A-Za-z0-9_.*?:-]+$"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_secret(cls: type, secret: str | None) -> str | None:
    """A secret given by the caller must be `whsec_` and base64 of a usable key."""
    if secret is not None:
        secret_key(secret)
    return secret


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        lower = name.lower()
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a header name")
        if lower in _RESERVED_HEADERS or lower.startswith("webhook-"):
            raise ValueError(f"header {name!r} is set by the bridge")
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r}: line breaks are not allowed")
    return headers


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Secret(_Strict):
    value: str
    expires_ms: int | None = Field(None, description="Unset: signs until rotated.")


class Endpoint(_Strict):
    """One subscriber, as stored in the key-value bucket every replica watches."""

    id: str
    url: str
    events: list[str]
    headers: dict[str, str] = Field(default_factory=dict)
    rate_per_s: float | None = None
    max_concurrency: int
    description: str = ""
    status: Status = "active"
    status_reason: str | None = None
    secrets: list[Secret]
    created_ms: int
    updated_ms: int

    def signing_keys(self, at_ms: int) -> list[bytes]:
        return [
            secret_key(s.value)
            for s in self.secrets
            if s.expires_ms is None or s.expires_ms > at_ms
        ]

    def public(self) -> EndpointOut:
        return EndpointOut(**self.model_dump(exclude={"secrets"}))


def event_matcher(filters: list[str]) -> re.Pattern[str]:
    """One regex for an endpoint's filters: `order.*` matches `order.created`, `*` all."""
    return re.compile("|".join(f"(?:{fnmatch.translate(f)})" for f in filters))


EventFilter = Annotated[str, Field(pattern=_EVENT_FILTER, max_length=200)]


class EndpointIn(_Strict):
    """Register an endpoint. Without `secret`, one is generated (shown once)."""

    url: str = Field(max_length=2048, description="http(s) URL the events are POSTed to.")
    events: list[EventFilter] = Field(
        default_factory=lambda: ["*"], min_length=1, description="Event types; * wildcards."
    )
    secret: str | None = Field(None, description="whsec_ + base64 of 24-64 bytes.")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every attempt.")
    rate_per_s: float | None = Field(None, gt=0, description="Unset: bridge.rate_per_s.")
    max_concurrency: int | None = Field(
        None, ge=1, le=1024, description="Unset: bridge.max_concurrency."
    )
    description: str = Field("", max_length=500)

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return _check_headers(headers)

    _secret = field_validator("secret")(_check_secret)


class EndpointPatch(_Strict):
    url: str | None = Field(None, max_length=2048)
    events: list[EventFilter] | None = Field(None, min_length=1)
    headers: dict[str, str] | None = None
    rate_per_s: float | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, ge=1, le=1024)
    description: str | None = Field(None, max_length=500)

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        return None if headers is None else _check_headers(headers)


class EndpointOut(_Strict):
    id: str
    url: str
    events: list[str]
    headers: dict[str, str]
    rate_per_s: float | None
    max_concurrency: int
    description: str
    status: Status
    status_reason: str | None
    created_ms: int
    updated_ms: int


class EndpointCreated(EndpointOut):
    secret: str = Field(description="Shown only now: keep it to verify signatures.")


class Rotation(_Strict):
    secret: str | None = Field(None, description="Unset: a new one is generated.")
    grace_s: float | None = Field(
        None, ge=0, description="How long the old secret keeps signing; unset: the default."
    )

    _secret = field_validator("secret")(_check_secret)


class Rotated(_Strict):
    secret: str
    old_secret_expires_ms: int


class Replay(_Strict):
    """Deliver again one event (`event_id`) or every matching event of a time range."""

    event_id: str | None = None
    since_ms: int | None = Field(None, ge=0)
    until_ms: int | None = Field(None, ge=0)


class Attempt(_Strict):
    """One delivery attempt, as the log keeps it."""

    endpoint_id: str
    event_id: str
    event_type: str
    attempt: int
    at_ms: int
    status: int | None = Field(description="HTTP status; unset: no answer.")
    latency_ms: float
    outcome: Literal["delivered", "retry", "dead-lettered", "endpoint-disabled"]
    error: str | None = None
    response: str | None = Field(None, description="First bytes of the response body.")
    event_seq: int = Field(0, description="Position of the event in its stream...")
    event_partition: int = Field(0, description="...and partition (Kafka).")
    replayed: bool = Field(False, description="A replay or redrive, not the event stream.")


class DeadLetter(_Strict):
    seq: int
    endpoint_id: str
    event_id: str
    event_type: str
    attempts: int
    at_ms: int
    error: str | None
    status: int | None
