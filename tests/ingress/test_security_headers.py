"""Security headers on every data-plane response of `relaygate up`: proxied (by each
header's mode against the upstream's own), cached, problems and 404s (the strict CSP
the gateway uses for what it writes itself), HSTS only when the request came over TLS."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from contracts.bus.memory import MemoryBus
from contracts.config import GATEWAY_CSP, Config
from contracts.topics import Topics
from ingress.app import IngressApp, Receive, Scope
from ingress.responses import Send
from tests.support.counting_upstream import CountingUpstream
from tests.support.gateway import RelaygateUp, running_up

OURS = "default-src 'self'"
THEIRS = "default-src https://cdn.example"
HSTS = "max-age=31536000; includeSubDomains"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: CountingUpstream
) -> Iterator[RelaygateUp]:
    to = {"type": "upstream", "upstream": "counting"}
    config = {
        # 127.0.0.1 is our TLS-terminating proxy in these tests: it may say `https`.
        "caller": {"trusted_proxies": ["127.0.0.1/32"]},
        "security_headers": {
            "content_security_policy": OURS,
            "headers": {"Permissions-Policy": "camera=()"},
        },
        "routes": [
            {"name": "proxied", "when": {"path": "/p/{rest:path}"}, "to": to},
            {
                "name": "strict",
                "when": {"path": "/o/{rest:path}"},
                "to": to,
                "security_headers": {
                    "content_security_policy": {"value": "default-src 'none'", "mode": "override"},
                    "frame_options": None,
                },
            },
            {
                "name": "cached",
                "when": {"path": "/c/{rest:path}"},
                "to": to,
                "cache": {"ttl_s": 60},
            },
            {"name": "slow", "when": {"path": "/slow"}, "to": to, "timeout_ms": 150},
        ],
        "upstreams": {"counting": {"url": upstream.url}},
    }
    with running_up(tmp_path_factory.mktemp("security"), "security", config) as up:
        yield up


def _get(
    gateway: RelaygateUp, path: str, *upstream_headers: str, tls: bool = False
) -> httpx.Response:
    headers = [("x-reflect-header", h) for h in upstream_headers]
    if tls:
        headers.append(("x-forwarded-proto", "https"))
    return httpx.get(f"{gateway.url}{path}", headers=headers, timeout=10.0)


def _all(response: httpx.Response, name: str) -> list[str]:
    return response.headers.get_list(name)


@pytest.mark.nats
@pytest.mark.e2e
def test_proxied_response_gets_our_headers_where_the_upstream_sent_none(
    gateway: RelaygateUp,
) -> None:
    response = _get(gateway, "/p/plain")
    assert response.status_code == 200
    assert _all(response, "content-security-policy") == [OURS]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["permissions-policy"] == "camera=()"
    assert "strict-transport-security" not in response.headers  # plain HTTP


@pytest.mark.nats
@pytest.mark.e2e
def test_upstream_headers_are_kept_by_default(gateway: RelaygateUp) -> None:
    response = _get(
        gateway,
        "/p/own",
        f"Content-Security-Policy: {THEIRS}",
        "X-Frame-Options: SAMEORIGIN",
    )
    assert _all(response, "content-security-policy") == [THEIRS]
    assert _all(response, "x-frame-options") == ["SAMEORIGIN"]
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.nats
@pytest.mark.e2e
def test_route_override_replaces_the_upstream_header_and_null_removes_one(
    gateway: RelaygateUp,
) -> None:
    response = _get(gateway, "/o/own", f"Content-Security-Policy: {THEIRS}")
    assert _all(response, "content-security-policy") == ["default-src 'none'"]
    assert "x-frame-options" not in response.headers
    assert response.headers["referrer-policy"] == "no-referrer"  # the rest from the global


@pytest.mark.nats
@pytest.mark.e2e
def test_cached_response_gets_them_too(gateway: RelaygateUp, upstream: CountingUpstream) -> None:
    first = _get(gateway, "/c/page")
    hits = upstream.total()
    hit = _get(gateway, "/c/page")
    assert (first.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert upstream.total() == hits
    for response in (first, hit):
        assert _all(response, "content-security-policy") == [OURS]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.nats
@pytest.mark.e2e
@pytest.mark.parametrize(("path", "status"), [("/nowhere", 404), ("/slow", 504)])
def test_problems_get_the_strict_gateway_csp(gateway: RelaygateUp, path: str, status: int) -> None:
    response = (
        _get(gateway, path)
        if status == 404
        else httpx.get(f"{gateway.url}{path}", headers={"x-reflect-delay-ms": "1000"}, timeout=10.0)
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert _all(response, "content-security-policy") == [GATEWAY_CSP]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.nats
@pytest.mark.e2e
def test_hsts_only_on_requests_that_came_over_tls(gateway: RelaygateUp) -> None:
    for path in ("/p/tls", "/nowhere", "/c/tls"):
        assert _get(gateway, path, tls=True).headers["strict-transport-security"] == HSTS
        assert "strict-transport-security" not in _get(gateway, path).headers
    kept = _get(gateway, "/p/tls", "Strict-Transport-Security: max-age=60", tls=True)
    assert _all(kept, "strict-transport-security") == ["max-age=60"]


# ------------------------------------------------------------------ in process


async def test_tls_requests_and_the_gateways_own_endpoints_get_them() -> None:
    """The ingress behind its own TLS (scope scheme https), and an endpoint it serves."""
    bus = MemoryBus(topics=Topics(), node_id="ingress-1")
    await bus.connect()
    app = IngressApp(Config(security_headers={}), bus)

    async def token(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app.endpoints["/oauth/token"] = token
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://gw.test") as client:
            for path in ("/oauth/token", "/nowhere"):
                response = await client.get(path)
                assert response.headers["content-security-policy"] == GATEWAY_CSP
                assert response.headers["strict-transport-security"] == HSTS
                assert response.headers["x-content-type-options"] == "nosniff"
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            response = await client.get("/oauth/token")
            assert response.headers["x-frame-options"] == "DENY"
            assert "strict-transport-security" not in response.headers
    finally:
        await bus.close()
