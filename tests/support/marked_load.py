"""Load with marked requests for end-to-end tests: each request carries a unique
marker (path, query, header, body) that the echo worker must send back, so that a
reply delivered to the wrong request shows."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class Outcome:
    marker: str
    status: int
    seconds: float
    problem: str | None  # what is wrong with the answer, None when it is its own
    content_type: str | None


async def send_marked(session: aiohttp.ClientSession, base_url: str, marker: str) -> Outcome:
    """POST a request marked three ways (path, query, body); check the echo carries
    exactly this request's marks and the correlation id it was answered under."""
    started = time.monotonic()
    try:
        async with session.post(
            f"{base_url}/echo/m/{marker}?m={marker}",
            data=f"payload-{marker}".encode(),
            headers={"x-marker": marker},
        ) as response:
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(marker, 0, time.monotonic() - started, repr(exc), None)
    seconds = time.monotonic() - started
    status = response.status
    content_type = response.headers.get("content-type")
    if status != 200:
        return Outcome(marker, status, seconds, body[:300].decode(errors="replace"), content_type)
    echoed = json.loads(body)
    wrong = [
        key
        for key, got, want in [
            ("path", echoed["path"], f"/echo/m/{marker}"),
            ("query", echoed["query"], f"m={marker}"),
            ("body", echoed["body"], f"payload-{marker}"),
            ("correlation id", echoed["correlation_id"], response.headers["x-correlation-id"]),
        ]
        if got != want
    ]
    if ["x-marker", marker] not in echoed["headers"]:
        wrong.append("header")
    problem = f"not its own: {wrong}" if wrong else None
    return Outcome(marker, status, seconds, problem, content_type)


async def run_load(
    urls: Sequence[str],
    count: int,
    connections_per_node: int,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """`count` requests at once, split evenly over the ingress nodes, at most
    `connections_per_node` in flight on each (the time of a request starts when it
    is sent, not when it starts waiting for a connection). aiohttp, because httpx's
    pool slows to ~50 requests/s with 64 connections on this machine."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60.0)
    sessions = [
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections_per_node), timeout=timeout
        )
        for _ in urls
    ]
    in_flight = [asyncio.Semaphore(connections_per_node) for _ in urls]

    async def one(i: int) -> Outcome:
        node = i % len(sessions)
        async with in_flight[node]:
            outcome = await send_marked(sessions[node], urls[node], f"{i}-{uuid.uuid4().hex}")
        if on_done is not None:
            on_done(outcome)
        return outcome

    try:
        return await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for session in sessions:
            await session.close()
