"""RFC 9457 problem details: the one shape of every error relaygate answers."""

from __future__ import annotations

from typing import Any

import orjson

CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://relaygate.dev/problems/"


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    correlation_id: str | None = None,
    **extra: Any,
) -> bytes:
    """`slug` names the problem type (`no-route`, `deadline-exceeded`, ...)."""
    body: dict[str, Any] = {"type": TYPE_BASE + slug, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    body.update(extra)
    return orjson.dumps(body)
