"""Assertions on what the gateway answers: problem details (RFC 9457) and correlation ids."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_TYPE_BASE = "https://relaygate.dev/problems/"


def assert_problem(
    response: httpx.Response, status: int, slug: str | None = None
) -> dict[str, Any]:
    """`status` with an application/problem+json body that agrees with it; the body."""
    where = f"{response.request.method} {response.request.url}"
    assert response.status_code == status, (
        f"{where}: {response.status_code} {response.text[:500]!r}, want {status}"
    )
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith("application/problem+json"), f"{where}: {content_type!r}"
    body: dict[str, Any] = response.json()
    assert body["status"] == status, body
    assert isinstance(body.get("title"), str), body
    if slug is not None:
        assert body["type"] == PROBLEM_TYPE_BASE + slug, body
    assert body.get("correlation_id") == response.headers.get("x-correlation-id"), body
    return body
