"""Upstreams' own OpenAPI documents, fetched when a reader asks, kept `docs.cache_s`;
a failure is kept `docs.retry_s` so that a dead upstream costs one timeout, not one per
reader. Concurrent readers share one fetch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import yaml

from contracts.config import Config, DocsConfig, Route, UpstreamTarget


@dataclass(frozen=True, slots=True)
class Fetched:
    """An OpenAPI 3.x document, or why there is none (`error`)."""

    url: str
    document: dict[str, Any] | None = None
    error: str | None = None


def resolve(config: Config, route: Route) -> str | None:
    """The absolute URL of a route's `docs.openapi_url`: a path is on the route's upstream
    (its first instance). Raises ValueError when it cannot be known."""
    url = route.docs.openapi_url
    if url is None or not url.startswith("/"):
        return url
    target = route.to
    if not isinstance(target, UpstreamTarget):
        raise ValueError("a path as openapi_url needs an upstream route; give a full URL")
    instances = config.upstreams[target.upstream].instances()
    if not instances:
        raise ValueError(
            f"upstream {target.upstream!r} is discovered at run time; give a full openapi_url"
        )
    return instances[0].url.rstrip("/") + url


class UpstreamDocs:
    """URL -> (expiry, result), across reloads."""

    def __init__(self, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.session = session
        self.kept: dict[str, tuple[float, Fetched]] = {}
        self.running: dict[str, asyncio.Task[Fetched]] = {}
        self.fetches = 0

    async def get(self, url: str, options: DocsConfig) -> Fetched:
        kept = self.kept.get(url)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        task = self.running.get(url)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(url, options))
            self.running[url] = task
            task.add_done_callback(lambda _: self.running.pop(url, None))
        return await asyncio.shield(task)

    async def _fetch(self, url: str, options: DocsConfig) -> Fetched:
        self.fetches += 1
        try:
            result = Fetched(url, document=await self._download(url, options))
            keep = options.cache_s
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            result = Fetched(url, error=_describe(exc))
            keep = options.retry_s
        self.kept[url] = (time.monotonic() + keep, result)
        return result

    async def _download(self, url: str, options: DocsConfig) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=options.fetch_timeout_ms / 1000)
        limit = options.max_document_bytes
        headers = {"accept": "application/json, application/yaml;q=0.9"}
        async with self.session().get(url, timeout=timeout, headers=headers) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(65_536):
                body += chunk
                if len(body) > limit:
                    raise ValueError(f"larger than docs.max_document_bytes ({limit})")
            yaml_type = "yaml" in response.headers.get("content-type", "")
        return _openapi(bytes(body), yaml_type or url.endswith((".yaml", ".yml")))


def _openapi(body: bytes, is_yaml: bool) -> dict[str, Any]:
    try:
        document = yaml.safe_load(body) if is_yaml else orjson.loads(body)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"not {'YAML' if is_yaml else 'JSON'}: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("not an OpenAPI document (not an object)")
    version = document.get("openapi")
    if not isinstance(version, str) or not version.startswith("3."):
        raise ValueError(f"not OpenAPI 3.x (openapi: {version!r})")
    if not isinstance(document.get("paths", {}), dict):
        raise ValueError("`paths` is not an object")
    return document


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
