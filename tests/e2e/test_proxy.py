"""`relaygate up` proxying to a real upstream (tests/support/reflector.py): what
the client sends arrives unchanged, and what the upstream answers comes back
unchanged. Each case is sent directly to the upstream too, and the two compared."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import BUSES, bus_section
from tests.support.gateway import RelaygateUp, running_up, wait_routed
from tests.support.reflector import Reflector

pytestmark = pytest.mark.e2e

PREFIX = "/up"


@pytest.fixture(scope="module")
def reflector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reflector]:
    upstream = Reflector(tmp_path_factory.mktemp("reflector")).start()
    yield upstream
    upstream.stop()


def _start(request: pytest.FixtureRequest, bus: str, reflector: Reflector) -> Iterator[RelaygateUp]:
    workdir = request.getfixturevalue("tmp_path_factory").mktemp(f"proxy-{bus}")
    config = {
        "bus": bus_section(request, bus),
        "routes": [
            {
                "name": "proxy",
                "when": {"path": PREFIX + "/{rest:path}"},
                "to": {"type": "upstream", "upstream": "reflector", "path": "/{rest}"},
                "timeout_ms": 10_000,
            }
        ],
        "upstreams": {"reflector": {"url": reflector.url}},
        "workers": [{"type": "routing"}],
    }
    with running_up(workdir, f"up-{bus}", config) as gateway:
        if bus == "kafka":
            wait_routed(f"{gateway.url}{PREFIX}/warm-up")
        yield gateway


@pytest.fixture(scope="module")
def nats_proxy(request: pytest.FixtureRequest, reflector: Reflector) -> Iterator[RelaygateUp]:
    yield from _start(request, "nats", reflector)


@pytest.fixture(scope="module")
def kafka_proxy(request: pytest.FixtureRequest, reflector: Reflector) -> Iterator[RelaygateUp]:
    yield from _start(request, "kafka", reflector)


@pytest.fixture(params=BUSES)
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    up: RelaygateUp = request.getfixturevalue(f"{request.param}_proxy")
    async with httpx.AsyncClient(base_url=up.url, timeout=30.0) as client:
        yield client


@pytest.fixture
async def direct(reflector: Reflector) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=reflector.url, timeout=30.0) as client:
        yield client


async def _both(
    gateway: httpx.AsyncClient,
    direct: httpx.AsyncClient,
    method: str,
    path: str,
    **request: Any,
) -> tuple[httpx.Response, httpx.Response]:
    """The same request through the gateway and straight to the upstream."""
    proxied = await gateway.request(method, PREFIX + path, **request)
    straight = await direct.request(method, path, **request)
    return proxied, straight


def _headers_named(seen: dict[str, Any], name: str) -> list[str]:
    return [value for header, value in seen["headers"] if header == name]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
async def test_method_reaches_the_upstream(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient, method: str
) -> None:
    body = None if method in ("GET", "HEAD", "DELETE") else f"{method} body".encode()
    proxied, straight = await _both(gateway, direct, method, "/things/1", content=body)

    assert proxied.status_code == straight.status_code == 200, proxied.text
    assert proxied.headers["x-seen-method"] == method
    assert proxied.headers.get("x-correlation-id")
    if method == "HEAD":
        assert proxied.content == b""
        return
    seen = proxied.json()
    assert seen["method"] == method
    assert seen["path"] == "/things/1"
    assert seen["body_length"] == len(body or b"")
    assert seen["body_sha256"] == straight.json()["body_sha256"]


@pytest.mark.parametrize(
    "path",
    [
        "/a%2Fb/c",  # an encoded slash is data, not a separator
        "/with%20space/and+plus",
        "/caf%C3%A9/%E2%9C%93",  # percent-encoded UTF-8
        "/日本語/ünïcödé",  # httpx encodes these as UTF-8
        "/semi;colon/at@/colon:/tilde~/%25percent",
    ],
    ids=["encoded-slash", "space-plus", "encoded-utf8", "unicode", "reserved"],
)
async def test_encoded_path_arrives_unchanged(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient, path: str
) -> None:
    proxied, straight = await _both(gateway, direct, "GET", path)

    assert proxied.status_code == 200, proxied.text
    assert proxied.json()["path"] == straight.json()["path"]


async def test_query_string_with_repeats_arrives_unchanged(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient
) -> None:
    query = "a=1&a=2&b=x%20y&a=3&empty=&flag&enc=%2F%26%3D&u=caf%C3%A9"
    proxied, straight = await _both(gateway, direct, "GET", f"/search?{query}")

    assert proxied.status_code == 200, proxied.text
    assert straight.json()["query"] == query
    assert proxied.json()["query"] == query


async def test_repeated_request_headers_arrive_in_order(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient
) -> None:
    headers = [("x-multi", "one"), ("x-other", "o"), ("x-multi", "two"), ("x-multi", "three")]
    proxied, straight = await _both(gateway, direct, "GET", "/headers", headers=headers)

    assert proxied.status_code == 200, proxied.text
    assert _headers_named(straight.json(), "x-multi") == ["one", "two", "three"]
    # Repeats may be sent as one comma-joined field (RFC 9110 5.3); order must hold.
    assert ", ".join(_headers_named(proxied.json(), "x-multi")) == "one, two, three"
    assert _headers_named(proxied.json(), "x-other") == ["o"]


async def test_repeated_response_headers_come_back_separately(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient
) -> None:
    asks = [
        ("x-reflect-header", "Set-Cookie: session=abc; Path=/; HttpOnly"),
        ("x-reflect-header", "Set-Cookie: theme=dark; Path=/"),
        ("x-reflect-header", "X-Multi-Out: 1"),
        ("x-reflect-header", "X-Multi-Out: 2"),
    ]
    proxied, straight = await _both(gateway, direct, "GET", "/cookies", headers=asks)

    assert proxied.status_code == 200, proxied.text
    cookies = ["session=abc; Path=/; HttpOnly", "theme=dark; Path=/"]
    assert straight.headers.get_list("set-cookie") == cookies
    assert proxied.headers.get_list("set-cookie") == cookies  # never comma-joined
    assert ", ".join(proxied.headers.get_list("x-multi-out")) == "1, 2"


async def test_one_mib_binary_body_round_trips_byte_for_byte(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient
) -> None:
    body = os.urandom(1024 * 1024)
    digest = hashlib.sha256(body).hexdigest()
    headers = {"content-type": "application/octet-stream"}

    described = await gateway.post(f"{PREFIX}/upload", content=body, headers=headers)
    echoed = await gateway.post(
        f"{PREFIX}/upload", content=body, headers={**headers, "x-reflect-body": "raw"}
    )

    assert described.status_code == 200, described.text
    assert described.json()["body_length"] == len(body)
    assert described.json()["body_sha256"] == digest
    assert echoed.status_code == 200, echoed.text[:500]
    assert echoed.headers["content-type"] == "application/octet-stream"
    assert len(echoed.content) == len(body)
    assert hashlib.sha256(echoed.content).hexdigest() == digest


async def test_created_201_passes_through(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient
) -> None:
    proxied, straight = await _both(
        gateway,
        direct,
        "POST",
        "/orders",
        json={"item": 1},
        headers={"x-reflect-status": "201", "x-reflect-header": "Location: /orders/17"},
    )

    assert proxied.status_code == straight.status_code == 201, proxied.text
    assert proxied.headers["location"] == "/orders/17"
    assert proxied.json()["body_sha256"] == straight.json()["body_sha256"]


async def test_no_content_204_passes_through_without_a_body(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient
) -> None:
    proxied, _ = await _both(
        gateway, direct, "DELETE", "/orders/17", headers={"x-reflect-status": "204"}
    )

    assert proxied.status_code == 204, proxied.text
    assert proxied.content == b""
    assert "content-length" not in proxied.headers or proxied.headers["content-length"] == "0"


async def test_redirect_301_is_not_followed_and_keeps_its_location(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient
) -> None:
    location = "https://elsewhere.example/new%20place?x=1&x=2#frag"
    proxied, straight = await _both(
        gateway,
        direct,
        "GET",
        "/old",
        headers={"x-reflect-status": "301", "x-reflect-header": f"Location: {location}"},
    )

    assert straight.headers["location"] == location
    assert proxied.status_code == 301, proxied.text
    assert proxied.headers["location"] == location
    assert proxied.json()["path"] == "/old"  # the upstream's own body, not the target's


@pytest.mark.parametrize("status", [404, 500])
async def test_error_status_and_body_pass_through_unchanged(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient, status: int
) -> None:
    page = f"<h1>upstream says {status}</h1>\n".encode()
    proxied, straight = await _both(
        gateway,
        direct,
        "POST",
        "/broken",
        content=page,
        headers={
            "content-type": "text/html; charset=utf-8",
            "x-reflect-status": str(status),
            "x-reflect-body": "raw",
        },
    )

    assert straight.status_code == status
    assert proxied.status_code == status, proxied.text
    assert proxied.content == page  # the upstream's page, not a gateway problem document
    assert proxied.headers["content-type"] == "text/html; charset=utf-8"
