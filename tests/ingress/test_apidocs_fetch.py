"""Upstream OpenAPI documents fetched from a real local aiohttp server: kept for
docs.cache_s, a failure kept docs.retry_s, concurrent readers sharing one fetch, and
slow, wrong or oversized answers turned into a note instead of an error."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from contracts.config import Config, DocsConfig
from ingress.apidocs.fetch import UpstreamDocs, resolve
from tests.support.processes import free_port

DOCUMENT = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}


class Upstream:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.hits[request.path] += 1
        if request.path == "/slow.json":
            await asyncio.sleep(1)
        if request.path == "/missing.json":
            return web.Response(status=404)
        if request.path == "/swagger.json":
            return web.json_response({"swagger": "2.0", "paths": {}})
        if request.path == "/big.json":
            return web.Response(body=b" " * 5000 + orjson.dumps(DOCUMENT))
        if request.path == "/openapi.yaml":
            return web.Response(text="openapi: 3.0.3\npaths: {}\n", content_type="application/yaml")
        await asyncio.sleep(0.05)
        return web.json_response(DOCUMENT)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    app = web.Application()
    app.router.add_get("/{name}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    yield server
    await runner.cleanup()


@pytest.fixture
async def docs() -> AsyncIterator[UpstreamDocs]:
    session = aiohttp.ClientSession()
    yield UpstreamDocs(lambda: session)
    await session.close()


OPTIONS = DocsConfig(fetch_timeout_ms=300, cache_s=60, retry_s=0.3, max_document_bytes=4096)


async def test_a_document_is_fetched_once_for_concurrent_and_later_readers(
    upstream: Upstream, docs: UpstreamDocs
) -> None:
    url = f"{upstream.url}/openapi.json"
    results = await asyncio.gather(*(docs.get(url, OPTIONS) for _ in range(5)))
    assert {r.error for r in results} == {None}
    assert results[0].document == DOCUMENT
    assert (await docs.get(url, OPTIONS)).document == DOCUMENT
    assert upstream.hits["/openapi.json"] == 1
    yaml_document = await docs.get(f"{upstream.url}/openapi.yaml", OPTIONS)
    assert yaml_document.document == {"openapi": "3.0.3", "paths": {}}


async def test_failures_become_notes_and_are_retried_after_retry_s(
    upstream: Upstream, docs: UpstreamDocs
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    slow = await docs.get(f"{upstream.url}/slow.json", OPTIONS)
    assert slow.error == "timed out"
    assert loop.time() - started < 1.5
    assert (await docs.get(f"{upstream.url}/missing.json", OPTIONS)).error == "HTTP 404"
    swagger = await docs.get(f"{upstream.url}/swagger.json", OPTIONS)
    assert swagger.error == "not OpenAPI 3.x (openapi: None)"
    big = await docs.get(f"{upstream.url}/big.json", OPTIONS)
    assert big.error == "larger than docs.max_document_bytes (4096)"
    closed = await docs.get(f"http://127.0.0.1:{free_port()}/openapi.json", OPTIONS)
    assert closed.document is None
    assert closed.error
    await docs.get(f"{upstream.url}/missing.json", OPTIONS)
    assert upstream.hits["/missing.json"] == 1  # the failure is kept...
    await asyncio.sleep(0.35)
    await docs.get(f"{upstream.url}/missing.json", OPTIONS)
    assert upstream.hits["/missing.json"] == 2  # ...for retry_s


def test_a_path_as_openapi_url_is_on_the_routes_upstream() -> None:
    def route(to: dict[str, str], url: str) -> dict[str, object]:
        return {"name": "r", "when": {"path": "/r"}, "to": to, "docs": {"openapi_url": url}}

    upstream = {"type": "upstream", "upstream": "shop"}
    config = Config.model_validate(
        {
            "routes": [
                route(upstream, "/openapi.json"),
                {**route({"type": "worker", "topic": "t"}, "/openapi.json"), "name": "w"},
                {**route(upstream, "http://docs.test/shop.json"), "name": "abs"},
            ],
            "upstreams": {"shop": {"url": "http://10.0.0.5:8000/api/"}},
        }
    )
    assert resolve(config, config.routes[0]) == "http://10.0.0.5:8000/api/openapi.json"
    with pytest.raises(ValueError, match="needs an upstream route"):
        resolve(config, config.routes[1])
    assert resolve(config, config.routes[2]) == "http://docs.test/shop.json"
