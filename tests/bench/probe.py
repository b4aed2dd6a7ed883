"""Single HTTP requests around the load runs: is a target answering 200 before we
measure it, and what do the ingress node's counters say afterwards."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Sequence
from urllib.parse import urlsplit


class TargetBroken(RuntimeError):
    """A target did not answer 200 before its run; the message is the symptom."""


def get(url: str, timeout: float = 5.0, headers: Sequence[str] = ()) -> tuple[int, bytes]:
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1":  # the bench only talks to loopback
        raise ValueError(f"refusing non-loopback URL {url}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        fields = dict(header.split(": ", 1) for header in headers)
        conn.request("GET", parts.path or "/", headers=fields)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until_ok(url: str, timeout: float = 60.0, headers: Sequence[str] = ()) -> bytes:
    """The body of the first 200; a worker may still be joining its consumer group."""
    deadline = time.monotonic() + timeout
    symptom = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = get(url, headers=headers)
        except (OSError, http.client.HTTPException) as exc:
            symptom = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return body
            symptom = f"HTTP {status}: {body[:300].decode(errors='replace')}"
        time.sleep(0.5)
    raise TargetBroken(f"GET {url} did not answer 200 within {timeout:.0f}s; last: {symptom}")


def ingress_stats(admin_url: str) -> dict[str, int]:
    """The ingress node's integer counters from its admin API (empty if unreachable)."""
    try:
        status, body = get(admin_url + "/stats")
    except (OSError, http.client.HTTPException):
        return {}
    if status != 200:
        return {}
    data = json.loads(body)
    return {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that moved, except the ones every request moves."""
    moved = {k: after[k] - before.get(k, 0) for k in after if k != "pending"}
    return {k: v for k, v in moved.items() if v and k not in ("requests", "replies")}
