"""`HttpProxy`: the handler that forwards one route's requests to its HTTP upstream.

Built once per route when the config loads; per request it only fills the URL,
rewrites the headers and relays. Every failure becomes a problem reply:

    timeout, or too little time left before the deadline   -> 504 upstream-timeout
    refused / reset / DNS / closed before answering         -> 502 upstream-unavailable
    malformed or truncated response                         -> 502 upstream-bad-response
    body above upstream.max_response_bytes                  -> 502 upstream-response-too-large
    anything else (a bug)                                   -> 500 proxy-error, logged
"""

from __future__ import annotations

import logging

import aiohttp

from contracts.config import HttpUpstream, Route, UpstreamTarget
from workers.routing.headers import forward_request_headers, response_headers
from workers.routing.url import UpstreamUrl
from workers.sdk import Request, Response

log = logging.getLogger("relaygate.routing")

# Under 2 ms before the deadline (which has 1 ms steps) no round trip fits: don't start one.
_TOO_LATE_S = 0.002
# aiohttp rounds timeouts above `ceil_threshold` up to a whole second of loop time;
# the deadline is in milliseconds, so never round.
_NO_CEIL = float("inf")


class HttpProxy:
    """`await proxy(request) -> Response` for one route; never raises."""

    __slots__ = ("_connect_s", "_default_s", "_max_body", "_session", "_url", "route", "upstream")

    def __init__(
        self,
        route: Route,
        upstream: HttpUpstream,
        session: aiohttp.ClientSession,
        *,
        default_timeout_s: float = 30.0,
    ) -> None:
        target = route.to
        if not isinstance(target, UpstreamTarget):
            raise ValueError(f"route {route.name!r} does not go to an upstream")
        self.route = route.name
        self.upstream = target.upstream
        self._session = session
        self._url = UpstreamUrl(upstream, target.path)
        self._connect_s = upstream.connect_timeout_ms / 1000
        self._max_body = upstream.max_response_bytes
        # Used only for envelopes without a deadline: the ingress always sets one.
        self._default_s = route.timeout_ms / 1000 if route.timeout_ms else default_timeout_s

    async def __call__(self, request: Request) -> Response:
        remaining = request.remaining()
        timeout_s = self._default_s if remaining is None else remaining
        if timeout_s < _TOO_LATE_S:
            return self._timeout(timeout_s)
        http = request.http
        try:
            url = self._url.url(http.path, http.query, http.params)
            timeout = aiohttp.ClientTimeout(
                total=timeout_s,
                sock_connect=min(self._connect_s, timeout_s),
                ceil_threshold=_NO_CEIL,
            )
            async with self._session.request(
                http.method,
                url,
                headers=forward_request_headers(http),
                data=request.body or None,
                allow_redirects=False,
                timeout=timeout,
            ) as reply:
                return await self._relay(reply, http.method)
        except TimeoutError:
            return self._timeout(timeout_s)
        except aiohttp.ClientConnectionError as exc:
            return self._failed(exc, "upstream-unavailable", "Upstream unavailable")
        except aiohttp.ClientError as exc:
            return self._failed(exc, "upstream-bad-response", "Bad response from upstream")
        except Exception as exc:
            log.exception("proxying %s %s on route %s failed", http.method, http.path, self.route)
            return Response.problem(
                500,
                "proxy-error",
                "The request could not be forwarded",
                f"{type(exc).__name__} while forwarding to upstream {self.upstream!r}",
            )

    async def _relay(self, reply: aiohttp.ClientResponse, method: str) -> Response:
        status = reply.status
        headers = response_headers(reply.raw_headers)
        if method == "HEAD" or status in (204, 304) or status < 200:
            return Response(status, headers)
        limit = self._max_body
        declared = reply.content_length
        if declared is not None and declared > limit:
            reply.close()
            return self._too_large(f"it declares {declared} bytes")
        # Count as we go: a chunked body has no declared size to check up front.
        chunks: list[bytes] = []
        total = 0
        async for chunk in reply.content.iter_any():
            total += len(chunk)
            if total > limit:
                # Not released to the pool: the rest of the body is still unread.
                reply.close()
                return self._too_large(f"it sent more than {limit} bytes")
            chunks.append(chunk)
        return Response(status, headers, b"".join(chunks))

    def _failed(self, exc: aiohttp.ClientError, slug: str, title: str) -> Response:
        # The exception text names internal addresses: it goes to the log, not the client.
        log.warning("route %s, upstream %s: %s", self.route, self.upstream, exc)
        detail = f"upstream {self.upstream!r} failed: {type(exc).__name__}"
        return Response.problem(502, slug, title, detail)

    def _timeout(self, timeout_s: float) -> Response:
        return Response.problem(
            504,
            "upstream-timeout",
            "Upstream timed out",
            f"upstream {self.upstream!r} did not answer within {round(timeout_s * 1000)} ms",
        )

    def _too_large(self, why: str) -> Response:
        return Response.problem(
            502,
            "upstream-response-too-large",
            "Upstream response too large",
            f"upstream {self.upstream!r} response is above {self._max_body} bytes: {why}",
        )
