"""`HttpProxy`: the handler that forwards one route's requests to its HTTP upstream.

Built once per route when the config loads; per request it asks the circuit breaker,
picks an instance (failover group, then balancer), fills the URL, rewrites the headers
and relays, retrying idempotent requests within the budget. Every failure becomes a
problem reply:

    circuit breaker open                                    -> 503 upstream-circuit-open
    no instance available (all unhealthy or ejected)        -> 503 upstream-no-healthy-instance
    timeout, or too little time left before the deadline   -> 504 upstream-timeout
    refused / reset / DNS / closed before answering         -> 502 upstream-unavailable
    malformed or truncated response                         -> 502 upstream-bad-response
    body above upstream.max_response_bytes                  -> 502 upstream-response-too-large
    anything else (a bug)                                   -> 500 proxy-error, logged
"""

from __future__ import annotations

import logging

import aiohttp
from yarl import URL

from contracts.config import Route, UpstreamTarget
from contracts.telemetry import logs, tracing
from contracts.telemetry.tracing import CLIENT, Span, Tracer
from workers.routing.failover import may_retry
from workers.routing.headers import forward_request_headers, response_headers
from workers.routing.health import Instance
from workers.routing.upstream import UpstreamPool
from workers.routing.url import UpstreamUrl
from workers.sdk import Request, Response

log = logging.getLogger("relaygate.routing")

# Under 2 ms before the deadline (which has 1 ms steps) no round trip fits: don't start one.
_TOO_LATE_S = 0.002
# aiohttp rounds timeouts above `ceil_threshold` up to a whole second of loop time;
# the deadline is in milliseconds, so never round.
_NO_CEIL = float("inf")
_NO_INSTANCE_RETRY_AFTER = "1"


class HttpProxy:
    """`await proxy(request) -> Response` for one route; never raises."""

    __slots__ = (
        "_attempts",
        "_connect_s",
        "_default_s",
        "_generation",
        "_max_body",
        "_path",
        "_pool",
        "_urls",
        "route",
    )

    def __init__(
        self, route: Route, pool: UpstreamPool, *, default_timeout_s: float = 30.0
    ) -> None:
        target = route.to
        if not isinstance(target, UpstreamTarget):
            raise ValueError(f"route {route.name!r} does not go to an upstream")
        self.route = route.name
        self._pool = pool
        self._path = target.path
        self._generation = pool.generation
        self._urls = {i: UpstreamUrl(i.url, target.path) for i in pool.instances}
        options = pool.options
        self._connect_s = options.connect_timeout_ms / 1000
        self._max_body = options.max_response_bytes
        self._attempts = options.retries.attempts
        # Used only for envelopes without a deadline: the ingress always sets one.
        self._default_s = route.timeout_ms / 1000 if route.timeout_ms else default_timeout_s

    @property
    def upstream(self) -> str:
        return self._pool.name

    async def __call__(self, request: Request) -> Response:
        pool = self._pool
        if not pool.breaker.allow():
            return self._circuit_open()
        failed = True
        try:
            response, failed = await self._forward(request)
            return response
        finally:
            pool.breaker.record(failed)

    async def _forward(self, request: Request) -> tuple[Response, bool]:
        """The reply and whether it counts as a failure of the upstream."""
        pool = self._pool
        http = request.http
        pool.budget.request()
        retryable = self._attempts > 1 and may_retry(http)
        timeout_s = self._time_left(request)
        if timeout_s < _TOO_LATE_S:
            return self._timeout(timeout_s), False
        tried: list[Instance] = []
        while True:
            instance = pool.choose(http, tried)
            if instance is None:
                return self._no_instance(), True
            tried.append(instance)
            instance.outstanding += 1
            try:
                response, failed = await self._attempt(instance, request, timeout_s)
            finally:
                instance.outstanding -= 1
            pool.outlier.observe(instance, failed)
            if not failed or not retryable or len(tried) >= self._attempts:
                return response, failed
            timeout_s = self._time_left(request)
            if timeout_s < _TOO_LATE_S or not pool.budget.try_retry():
                return response, failed

    def _compiled(self, instance: Instance) -> UpstreamUrl:
        """The URL template of an instance that discovery added since the last request."""
        pool = self._pool
        if pool.generation != self._generation:
            # Rebuild, so the table holds the current instances only (no leak as
            # instances come and go); the ones that stay keep their compiled URL.
            old = self._urls
            self._urls = {i: old.get(i) or UpstreamUrl(i.url, self._path) for i in pool.instances}
            self._generation = pool.generation
        compiled = self._urls.get(instance)
        return compiled if compiled is not None else UpstreamUrl(instance.url, self._path)

    def _time_left(self, request: Request) -> float:
        remaining = request.remaining()
        return self._default_s if remaining is None else remaining

    async def _attempt(
        self, instance: Instance, request: Request, timeout_s: float
    ) -> tuple[Response, bool]:
        http = request.http
        span: Span | None = None
        try:
            compiled = self._urls.get(instance)
            if compiled is None:
                compiled = self._compiled(instance)
            url = compiled.url(http.path, http.query, http.params)
            timeout = aiohttp.ClientTimeout(
                total=timeout_s,
                sock_connect=min(self._connect_s, timeout_s),
                ceil_threshold=_NO_CEIL,
            )
            tracer = tracing.tracer()
            if tracer is None:  # pass the trace on as the ingress started it
                parent = request.envelope.traceparent
                state = request.envelope.tracestate
            else:
                span = self._client_span(tracer, instance, http.method, url)
                parent, state = span.traceparent(), span.tracestate
            async with self._pool.session.request(
                http.method,
                url,
                headers=_with_trace(forward_request_headers(http), parent, state),
                data=request.body or None,
                allow_redirects=False,
                timeout=timeout,
            ) as reply:
                if span is not None:
                    span.attributes["http.response.status_code"] = reply.status
                    if reply.status >= 500:
                        span.set_error()
                        span.attributes["error.type"] = str(reply.status)
                response = await self._relay(reply, http.method)
                return response, reply.status >= 500
        except TimeoutError:
            _span_error(span, "timeout")
            return self._timeout(timeout_s), True
        except aiohttp.ClientConnectionError as exc:
            _span_error(span, type(exc).__name__)
            return self._failed(exc, "upstream-unavailable", "Upstream unavailable"), True
        except aiohttp.ClientError as exc:
            _span_error(span, type(exc).__name__)
            return self._failed(exc, "upstream-bad-response", "Bad response from upstream"), True
        except Exception as exc:
            _span_error(span, type(exc).__name__)
            log.exception("proxying %s %s on route %s failed", http.method, http.path, self.route)
            response = Response.problem(
                500,
                "proxy-error",
                "The request could not be forwarded",
                f"{type(exc).__name__} while forwarding to upstream {self.upstream!r}",
            )
            return response, False
        finally:
            if span is not None:
                span.end()

    def _client_span(self, tracer: Tracer, instance: Instance, method: str, url: URL) -> Span:
        """The CLIENT span of one attempt (HTTP semantic conventions), a child of the
        worker's CONSUMER span."""
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.full": _redacted(str(url)),
            "server.address": url.host or "",
            "relaygate.upstream": self.upstream,
        }
        if url.port is not None:
            attributes["server.port"] = url.port
        return tracer.start(method, CLIENT, attributes)

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

    def _circuit_open(self) -> Response:
        response = Response.problem(
            503,
            "upstream-circuit-open",
            "Upstream circuit open",
            f"upstream {self.upstream!r} is failing; requests are refused for now",
        )
        response.headers.append(("retry-after", str(self._pool.breaker.retry_after_s())))
        return response

    def _no_instance(self) -> Response:
        detail = (
            f"every instance of upstream {self.upstream!r} is unhealthy or ejected"
            if self._pool.instances
            else f"upstream {self.upstream!r} has no instances (discovery found none)"
        )
        response = Response.problem(
            503, "upstream-no-healthy-instance", "No healthy upstream instance", detail
        )
        response.headers.append(("retry-after", _NO_INSTANCE_RETRY_AFTER))
        return response


def _span_error(span: Span | None, error: str) -> None:
    if span is not None:
        span.set_error(error)
        span.attributes["error.type"] = error


def _with_trace(
    headers: list[tuple[str, str]], traceparent: str | None, tracestate: str | None
) -> list[tuple[str, str]]:
    """`headers` with the client's trace context replaced by this hop's (W3C)."""
    if traceparent is None:
        return headers
    out = [(n, v) for n, v in headers if n != "traceparent" and n != "tracestate"]
    out.append(("traceparent", traceparent))
    if tracestate:
        out.append(("tracestate", tracestate))
    return out


def _redacted(url: str) -> str:
    """A URL for a span: the values of secret query parameters (`api_key=…`) replaced."""
    base, mark, query = url.partition("?")
    return f"{base}?{logs.redactor().query(query)}" if mark else url
