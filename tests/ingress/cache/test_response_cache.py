"""Response caching against real processes: two ingress nodes sharing one redis-server,
the routing worker in front of a real upstream (the reflector), on a real nats-server.
The reflector echoes the request's headers, so a body naming an earlier request's
`x-probe` proves the answer came from the cache, not from the upstream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.gateway import IngressNode, RelaygateRole, admin_stats, stop_all, write_config
from tests.support.processes import NatsServer, RedisServer
from tests.support.reflector import Reflector

pytestmark = [pytest.mark.redis, pytest.mark.nats, pytest.mark.e2e]

CACHED = {"ttl_s": 30, "max_entry_bytes": 65536}


def _route(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "when": {"path": f"/{name}/{{rest:path}}"},
        "to": {"type": "upstream", "upstream": "reflector", "path": "/{rest}"},
        "cache": CACHED,
        "timeout_ms": 10_000,
    }


@pytest.fixture(scope="module")
def nodes(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[IngressNode]]:
    workdir = tmp_path_factory.mktemp("cache")
    redis = RedisServer(workdir).start()
    reflector = Reflector(workdir).start()
    config_file = write_config(
        workdir / "cache.yaml",
        {
            "bus": {"url": nats_server.url, "prefix": f"rc-{uuid.uuid4().hex[:10]}"},
            "state": {"url": redis.url},
            "routes": [_route("cached"), _route("purgeable")],
            "upstreams": {"reflector": {"url": reflector.url}},
        },
    )
    worker = RelaygateRole(workdir, "routing", config_file, ["worker", "routing"])
    started = [worker, *(IngressNode(workdir, f"ingress-{i}", config_file) for i in (1, 2))]
    try:
        for process in started:
            process.start()
        for process in started:
            process.wait_ready()
        yield [p for p in started if isinstance(p, IngressNode)]
    finally:
        stop_all(started)
        reflector.stop()
        redis.stop()


def _get(node: IngressNode, path: str, *headers: tuple[str, str]) -> httpx.Response:
    """GET with a fresh `x-probe`; `x-reflect-header` pairs tell the upstream what to answer."""
    sent = [("x-probe", uuid.uuid4().hex), *headers]
    response = httpx.get(node.url + path, headers=sent, timeout=10.0)
    assert response.status_code < 500, response.text
    return response


def _upstream(cache_control: str, *more: str) -> list[tuple[str, str]]:
    return [("x-reflect-header", f"Cache-Control: {cache_control}")] + [
        ("x-reflect-header", header) for header in more
    ]


def _probe(response: httpx.Response) -> str:
    probe: str = dict(response.json()["headers"])["x-probe"]
    return probe


def _unique(route: str = "cached") -> str:
    return f"/{route}/{uuid.uuid4().hex}"


def test_second_get_is_a_hit_with_age_and_no_bus_hop(nodes: list[IngressNode]) -> None:
    node = nodes[0]
    path = _unique()
    first = _get(node, path, *_upstream("max-age=60"))
    assert first.headers["x-cache"] == "miss"
    replies = admin_stats(node.admin_url)["replies"]
    second = _get(node, path, *_upstream("max-age=60"))
    assert second.headers["x-cache"] == "hit"
    assert int(second.headers["age"]) >= 0
    assert _probe(second) == _probe(first)
    assert admin_stats(node.admin_url)["replies"] == replies  # answered without the bus
    head = httpx.head(node.url + path, timeout=10.0)
    assert head.headers["x-cache"] == "hit"
    assert head.headers["content-length"] == str(len(first.content))


def test_a_response_cached_through_one_node_is_a_hit_on_the_other(
    nodes: list[IngressNode],
) -> None:
    path = _unique()
    first = _get(nodes[0], path, *_upstream("public, max-age=60"))
    second = _get(nodes[1], path)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert _probe(second) == _probe(first)


def test_conditional_requests_are_answered_304_from_the_cache(nodes: list[IngressNode]) -> None:
    node = nodes[0]
    path = _unique()
    modified = "Tue, 14 Nov 2023 22:13:20 GMT"
    _get(node, path, *_upstream("max-age=60", 'ETag: "v1"', f"Last-Modified: {modified}"))
    by_etag = _get(nodes[1], path, ("if-none-match", 'W/"v1"'))
    assert (by_etag.status_code, by_etag.headers["x-cache"]) == (304, "hit")
    assert by_etag.headers["etag"] == '"v1"'
    assert by_etag.content == b""
    by_date = _get(node, path, ("if-modified-since", modified))
    assert by_date.status_code == 304
    changed = _get(node, path, ("if-none-match", '"v0"'))
    assert (changed.status_code, changed.headers["x-cache"]) == (200, "hit")


def test_vary_keys_entries_by_the_named_request_headers(nodes: list[IngressNode]) -> None:
    node = nodes[0]
    path = _unique()
    upstream = _upstream("max-age=60", "Vary: Accept-Language")
    english = _get(node, path, ("accept-language", "en"), *upstream)
    french = _get(node, path, ("accept-language", "fr"), *upstream)
    again = _get(node, path, ("accept-language", "en"))
    assert [r.headers["x-cache"] for r in (english, french, again)] == ["miss", "miss", "hit"]
    assert _probe(again) == _probe(english)
    assert _get(node, path, ("accept-language", "fr")).headers["x-cache"] == "hit"


def test_no_store_and_private_responses_are_not_shared(nodes: list[IngressNode]) -> None:
    node = nodes[0]
    for directive in ("no-store", "private, max-age=60"):
        path = _unique()
        _get(node, path, *_upstream(directive))
        assert _get(node, path).headers["x-cache"] == "miss", directive
    # A request's own no-store bypasses the cache: not read, not stored.
    path = _unique()
    _get(node, path, ("cache-control", "no-store"), *_upstream("max-age=60"))
    assert _get(node, path).headers["x-cache"] == "miss"


def test_two_callers_never_share_an_entry_and_private_is_kept_per_caller(
    nodes: list[IngressNode],
) -> None:
    for directive in ("public, max-age=60", "private, max-age=60"):
        path = _unique()
        alice = ("authorization", "Bearer alice")
        bob = ("authorization", "Bearer bob")
        first_alice = _get(nodes[0], path, alice, *_upstream(directive))
        first_bob = _get(nodes[0], path, bob, *_upstream(directive))
        again_alice = _get(nodes[1], path, alice)
        again_bob = _get(nodes[1], path, bob)
        anonymous = _get(nodes[1], path)
        assert first_bob.headers["x-cache"] == "miss", directive
        assert dict(first_bob.json()["headers"])["authorization"] == "Bearer bob"
        assert (again_alice.headers["x-cache"], again_bob.headers["x-cache"]) == ("hit", "hit")
        assert _probe(again_alice) == _probe(first_alice)
        assert _probe(again_bob) == _probe(first_bob)
        assert anonymous.headers["x-cache"] == "miss"


def test_admin_purges_by_path_and_by_route(nodes: list[IngressNode]) -> None:
    node = nodes[0]
    one, two = _unique("purgeable"), _unique("purgeable")
    kept = _unique()
    for path in (one, two, kept):
        _get(node, path, *_upstream("max-age=60"))
    purged = httpx.delete(f"{node.admin_url}/cache", params={"route": "purgeable", "path": one})
    assert purged.json()["purged"] >= 1
    assert _get(nodes[1], one).headers["x-cache"] == "miss"
    assert _get(nodes[1], two).headers["x-cache"] == "hit"
    httpx.delete(f"{nodes[1].admin_url}/cache", params={"route": "purgeable"}).raise_for_status()
    assert _get(node, two).headers["x-cache"] == "miss"
    assert _get(node, kept).headers["x-cache"] == "hit"


def test_stale_while_revalidate_serves_stale_once_and_refreshes_in_background(
    nodes: list[IngressNode],
) -> None:
    node = nodes[0]
    path = _unique()
    upstream = _upstream("max-age=1, stale-while-revalidate=30")
    first = _get(node, path, *upstream)
    time.sleep(1.3)
    stale = _get(node, path, *upstream)
    assert stale.headers["x-cache"] == "stale"
    assert _probe(stale) == _probe(first)
    deadline = time.monotonic() + 5
    while True:
        refreshed = _get(node, path, *upstream)
        if refreshed.headers["x-cache"] == "hit":
            break
        assert time.monotonic() < deadline, "the background refresh never landed"
        time.sleep(0.05)
    # The refresh is a request of its own: not the first one, nor a later client's.
    # Refreshed once, in the background, by replaying the request that was served stale.
    assert _probe(refreshed) == stale.request.headers["x-probe"]
