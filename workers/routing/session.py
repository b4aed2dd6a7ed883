"""The pooled HTTP client of one upstream, configured to be transparent: it adds no
headers of its own, decompresses nothing, follows no redirects and keeps no cookies.

aiohttp rather than httpx because this is the hot path: against a local uvicorn
upstream, aiohttp 3.14 spent ~0.3 ms of client CPU per small GET where httpx 0.29
spent ~2.5 ms one at a time and ~6 ms at 64 concurrent (same loop, uvloop).
"""

from __future__ import annotations

import aiohttp

from contracts.config import HttpUpstream

# Headers aiohttp would otherwise invent (User-Agent, Accept, Accept-Encoding, and an
# application/octet-stream Content-Type on bodies): the client's own ones go through.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def open_session(upstream: HttpUpstream) -> aiohttp.ClientSession:
    """A session with a keep-alive pool of `max_connections`; needs a running loop."""
    connector = aiohttp.TCPConnector(limit=upstream.max_connections, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_NO_AUTO_HEADERS,
        # Proxy settings from the environment would silently reroute upstream traffic.
        trust_env=False,
    )
