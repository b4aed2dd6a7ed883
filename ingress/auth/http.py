"""Reading small JSON answers from identity services without trusting their size."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson


async def read_json(response: aiohttp.ClientResponse, limit: int) -> Any:
    """The body as JSON; `ValueError` past `limit` bytes or when it is not JSON."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ValueError(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return orjson.loads(b"".join(chunks))
