"""CORS per route on `relaygate up` in front of a counting upstream: preflights are
answered at the ingress (nothing reaches the bus or the upstream), refused origins get
no CORS headers, and proxied, cached and error responses carry them with Vary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.config import ConfigError, load_config
from tests.support.counting_upstream import CountingUpstream
from tests.support.gateway import RelaygateUp, admin_stats, running_up, write_config

pytestmark = [pytest.mark.nats, pytest.mark.e2e]

APP = "https://app.example.com"
ADMIN = "https://admin.example.com:8443"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: CountingUpstream
) -> Iterator[RelaygateUp]:
    cors: dict[str, Any] = {
        "origins": [APP, ADMIN],
        "headers": ["content-type", "x-api-key"],
        "expose_headers": ["x-total"],
        "credentials": True,
        "max_age_s": 300,
    }
    to = {"type": "upstream", "upstream": "counting"}
    config = {
        "routes": [
            {
                "name": "api",
                "when": {"path": "/api/{rest:path}", "methods": ["GET", "POST"]},
                "to": to,
                "cors": cors,
                "max_body_bytes": 100,
            },
            {
                "name": "cached",
                "when": {"path": "/cached/{rest:path}", "methods": ["GET"]},
                "to": to,
                "cors": cors,
                "cache": {"ttl_s": 60},
            },
            {"name": "open", "when": {"path": "/open"}, "to": to, "cors": {"origins": ["*"]}},
            {"name": "plain", "when": {"path": "/plain"}, "to": to},
        ],
        "upstreams": {"counting": {"url": upstream.url}},
    }
    with running_up(tmp_path_factory.mktemp("cors"), "cors", config) as up:
        yield up


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def _preflight(
    gateway: RelaygateUp, path: str, origin: str, method: str, **extra: str
) -> httpx.Response:
    headers = {"origin": origin, "access-control-request-method": method, **extra}
    return httpx.options(f"{gateway.url}{path}", headers=headers, timeout=10.0)


def test_allowed_preflight_is_answered_at_the_ingress_without_a_bus_hop(
    gateway: RelaygateUp, upstream: CountingUpstream
) -> None:
    before, hits = admin_stats(gateway.admin_url), upstream.total()
    # The route does not list OPTIONS: the preflight is for the POST to come.
    response = _preflight(
        gateway,
        "/api/orders",
        APP,
        "POST",
        **{"access-control-request-headers": "Content-Type, X-Api-Key"},
    )
    assert response.status_code == 204, response.text
    assert _cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, POST",
        "access-control-allow-headers": "content-type, x-api-key",
        "access-control-max-age": "300",
        "access-control-allow-credentials": "true",
    }
    assert "Origin" in response.headers["vary"]
    after = admin_stats(gateway.admin_url)
    assert upstream.total() == hits
    assert after["replies"] == before["replies"]
    assert after["preflights"] == before["preflights"] + 1


@pytest.mark.parametrize(
    ("origin", "method", "requested"),
    [
        (EVIL, "POST", None),  # an origin not listed
        ("https://app.example.com.evil.example", "GET", None),  # exact match, not prefix
        (APP, "DELETE", None),  # a method the route does not have
        (APP, "POST", "x-secret"),  # a header not listed
    ],
)
def test_refused_preflight_gets_403_without_cors_headers(
    gateway: RelaygateUp,
    upstream: CountingUpstream,
    origin: str,
    method: str,
    requested: str | None,
) -> None:
    hits = upstream.total()
    extra = {"access-control-request-headers": requested} if requested else {}
    response = _preflight(gateway, "/api/orders", origin, method, **extra)
    if method == "DELETE":  # no route takes DELETE here: an ordinary OPTIONS, then 405
        assert response.status_code == 405
    else:
        assert response.status_code == 403
        assert response.json()["type"].endswith("/cors-refused")
    assert _cors_headers(response) == {}
    assert upstream.total() == hits


def test_actual_response_carries_cors_for_an_allowed_origin_only(
    gateway: RelaygateUp, upstream: CountingUpstream
) -> None:
    allowed = httpx.get(f"{gateway.url}/api/x", headers={"origin": ADMIN}, timeout=10.0)
    assert allowed.status_code == 200
    assert _cors_headers(allowed) == {
        "access-control-allow-origin": ADMIN,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-total",
    }
    assert allowed.headers["vary"] == "Origin"
    refused = httpx.get(f"{gateway.url}/api/x", headers={"origin": EVIL}, timeout=10.0)
    assert refused.status_code == 200  # the browser, not the gateway, withholds it
    assert _cors_headers(refused) == {}
    assert refused.headers["vary"] == "Origin"  # a shared cache must not mix them up


def test_error_responses_carry_cors_too(gateway: RelaygateUp) -> None:
    too_large = httpx.post(
        f"{gateway.url}/api/x", content=b"x" * 200, headers={"origin": APP}, timeout=10.0
    )
    assert too_large.status_code == 413
    assert too_large.headers["access-control-allow-origin"] == APP
    assert too_large.headers["vary"] == "Origin"


def test_cached_response_gets_the_cors_of_each_request(
    gateway: RelaygateUp, upstream: CountingUpstream
) -> None:
    url = f"{gateway.url}/cached/one"
    first = httpx.get(url, headers={"origin": APP}, timeout=10.0)
    hits = upstream.total()
    second = httpx.get(url, headers={"origin": ADMIN}, timeout=10.0)
    third = httpx.get(url, headers={"origin": EVIL}, timeout=10.0)
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == third.headers["x-cache"] == "hit"
    assert upstream.total() == hits
    assert first.headers["access-control-allow-origin"] == APP
    assert second.headers["access-control-allow-origin"] == ADMIN
    assert _cors_headers(third) == {}


def test_any_origin_without_credentials_is_a_star_and_needs_no_vary(gateway: RelaygateUp) -> None:
    response = httpx.get(f"{gateway.url}/open", headers={"origin": EVIL}, timeout=10.0)
    assert response.headers["access-control-allow-origin"] == "*"
    assert "vary" not in response.headers
    preflight = _preflight(gateway, "/open", EVIL, "PUT")
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"


def test_a_route_without_cors_forwards_options_as_an_ordinary_request(
    gateway: RelaygateUp, upstream: CountingUpstream
) -> None:
    hits = upstream.hits["OPTIONS /plain"]
    response = _preflight(gateway, "/plain", APP, "POST")
    assert response.status_code == 200
    assert _cors_headers(response) == {}
    assert upstream.hits["OPTIONS /plain"] == hits + 1


def test_an_origin_with_a_path_is_refused_with_its_yaml_path(tmp_path: Path) -> None:
    route = {
        "name": "r",
        "when": {"path": "/r"},
        "to": {"type": "worker", "topic": "r"},
        "cors": {"origins": ["https://app.example.com/path"]},
    }
    path = write_config(tmp_path / "bad.yaml", {"routes": [route]})
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.problems[0].startswith("routes[0].cors.origins: ")
