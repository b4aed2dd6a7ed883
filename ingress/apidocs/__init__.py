"""API documentation on the admin port, secured by role: `/api-docs/openapi.json`
(the routes), `/api-docs/asyncapi.json` (the topics), and `/api-docs/`, a page that
renders both offline. The documents need a credential; the page and its script do not
(they hold no data and ask the reader for one)."""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response

from contracts.config import Config
from contracts.problems import CONTENT_TYPE, problem
from ingress.apidocs.access import DocsAccess, Reader
from ingress.apidocs.asyncapi import build_asyncapi, envelope_schema
from ingress.apidocs.fetch import Fetched, UpstreamDocs, resolve
from ingress.apidocs.openapi import build_openapi
from ingress.app import IngressApp
from ingress.request import Refused

__all__ = ["PREFIX", "install_apidocs"]

PREFIX = "/api-docs"
# Strict: the page loads only its own script and style, and talks only to its origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
PRIVATE = {"cache-control": "no-store", "vary": "authorization, x-api-key"}
_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
    "docs.css": "text/css; charset=utf-8",
}


class _Docs:
    """The reader policies of the running config (rebuilt after a reload) and the
    upstream documents (kept across reloads)."""

    def __init__(self, admin: FastAPI, app: IngressApp) -> None:
        self.admin = admin
        self.app = app
        self.built: tuple[Config, DocsAccess] | None = None
        self.upstreams = UpstreamDocs(app.policy_state.auth.session)
        self.envelope = envelope_schema()

    @property
    def config(self) -> Config:
        config: Config = self.admin.state.config
        return config

    def access(self, config: Config) -> DocsAccess:
        if self.built is None or self.built[0] is not config:
            self.built = (config, DocsAccess(config, self.app.policy_state))
        return self.built[1]

    async def reader(self, request: Request, config: Config) -> Reader | Response:
        if not config.docs.enabled:
            return _problem(Refused(404, "no-docs", "Not found", "docs.enabled is false"))
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        client_ip = request.client.host if request.client else ""
        try:
            access = self.access(config)
        except ValueError as exc:  # e.g. an oauth reader policy without auth_server
            return _problem(Refused(503, "docs-unavailable", "API docs unavailable", str(exc)))
        found = await access.authenticate(request.url.path, headers, client_ip)
        return _problem(found) if isinstance(found, Refused) else found

    async def fetched(self, config: Config, reader: Reader) -> dict[str, Fetched]:
        """The upstream documents of the routes this reader sees, fetched side by side."""
        urls: dict[str, str] = {}
        results: dict[str, Fetched] = {}
        for route in config.routes:
            if route.docs.openapi_url is None or not reader.sees(route.docs.roles):
                continue
            try:
                url = resolve(config, route)
            except ValueError as exc:
                results[route.name] = Fetched(route.docs.openapi_url, error=str(exc))
                continue
            if url is not None:
                urls[route.name] = url
        found = await asyncio.gather(*(self.upstreams.get(u, config.docs) for u in urls.values()))
        results.update(zip(urls, found, strict=True))
        return results


def install_apidocs(admin: FastAPI, app: IngressApp) -> None:
    docs = _Docs(admin, app)
    admin.state.apidocs = docs
    router = APIRouter(prefix=PREFIX, tags=["API docs"])
    static = {
        name: (resources.files(__package__).joinpath("static", name).read_bytes(), media)
        for name, media in _STATIC.items()
    }

    @router.get("/openapi.json", summary="OpenAPI 3.1 of the routes the caller may see")
    async def openapi(request: Request) -> Response:
        config = docs.config
        reader = await docs.reader(request, config)
        if isinstance(reader, Response):
            return reader
        document = build_openapi(config, reader, await docs.fetched(config, reader))
        return _json(document)

    @router.get("/asyncapi.json", summary="AsyncAPI 3.0 of the topics the caller may see")
    async def asyncapi(request: Request) -> Response:
        config = docs.config
        reader = await docs.reader(request, config)
        if isinstance(reader, Response):
            return reader
        return _json(build_asyncapi(config, reader, docs.envelope))

    @router.get("/", summary="A page that renders both documents (asks for a credential)")
    async def page() -> Response:
        body, media = static["index.html"]
        return Response(body, media_type=media, headers=PAGE_HEADERS)

    @router.get("/{name}", summary="The page's script and style", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in static or name == "index.html":
            return _problem(Refused(404, "not-found", "Not found", f"no {PREFIX}/{name}"))
        body, media = static[name]
        return Response(body, media_type=media, headers=PAGE_HEADERS)

    admin.include_router(router)


def _json(document: dict[str, Any]) -> Response:
    return Response(orjson.dumps(document), media_type="application/json", headers=PRIVATE)


def _problem(refused: Refused) -> Response:
    headers = {**PRIVATE}
    for name, value in refused.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    body = problem(refused.status, refused.slug, refused.title, refused.detail)
    return Response(body, status_code=refused.status, media_type=CONTENT_TYPE, headers=headers)
