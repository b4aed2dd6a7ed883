"""API docs secured by role, end to end: `relaygate up` with API-key routes, an upstream
(a real aiohttp server) that publishes its own OpenAPI document, two readers with
different roles, an anonymous caller, the admin token, and the offline docs page."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web
from openapi_spec_validator import validate

from tests.support.gateway import running_up, write_config
from tests.support.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

ADMIN_TOKEN = "apidocs-admin-token-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
SHOP_OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "shop", "version": "7"},
    "paths": {
        "/items/{item_id}": {
            "get": {
                "operationId": "getItem",
                "summary": "One item",
                "parameters": [
                    {
                        "name": "item_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The item",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Item"}}
                        },
                    }
                },
            }
        }
    },
    "components": {"schemas": {"Item": {"type": "object"}}},
}


class Shop:
    """The upstream: its OpenAPI document (counting fetches) and the items it describes."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: Counter[str] = Counter()

    async def openapi(self, _: web.Request) -> web.Response:
        self.hits["openapi"] += 1
        return web.json_response(SHOP_OPENAPI)

    async def item(self, request: web.Request) -> web.Response:
        return web.json_response({"id": int(request.match_info["item_id"]), "path": request.path})


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    server = Shop()
    app = web.Application()
    app.router.add_get("/openapi.json", server.openapi)
    app.router.add_get("/items/{item_id}", server.item)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    yield server
    await runner.cleanup()


def _config(shop: Shop) -> dict[str, Any]:
    api_key = [{"type": "api_key"}]
    return {
        "admin": {"token": ADMIN_TOKEN},
        "routes": [
            {
                "name": "orders",
                "when": {"path": "/orders/{rest:path}", "methods": ["GET"]},
                "to": {"type": "upstream", "upstream": "shop", "path": "/{rest}"},
                "policies": api_key,
                "docs": {"roles": ["sales"], "openapi_url": "/openapi.json", "tags": ["shop"]},
            },
            {
                "name": "legacy",
                "when": {"path": "/legacy/{rest:path}"},
                "to": {"type": "upstream", "upstream": "gone"},
                "policies": api_key,
                "docs": {"roles": ["sales"], "openapi_url": "/openapi.json"},
            },
            {
                "name": "payroll",
                "when": {"path": "/payroll/{id:int}", "methods": ["GET", "PUT"]},
                "to": {"type": "worker", "topic": "payroll"},
                "policies": [
                    *api_key,
                    {"type": "rate_limit", "limits": [{"requests": 9, "window_s": 1}]},
                ],
                "docs": {"roles": ["hr"], "summary": "A salary slip"},
            },
            {
                "name": "status",
                "when": {"path": "/status", "methods": ["GET"]},
                "to": {"type": "worker", "topic": "echo"},
            },
        ],
        "upstreams": {
            "shop": {"url": f"http://127.0.0.1:{shop.port}"},
            "gone": {"url": f"http://127.0.0.1:{free_port()}"},
        },
        "docs": {
            "title": "Acme API",
            "fetch_timeout_ms": 1000,
            "events": [
                {"name": "order-created", "roles": ["sales"]},
                {"name": "salary-paid", "roles": ["hr"]},
            ],
        },
        "workers": [{"type": "echo", "topics": ["echo"]}],
    }


async def test_each_reader_sees_the_routes_and_topics_of_its_roles(
    tmp_path: Path, shop: Shop
) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    with running_up(tmp_path, "apidocs", _config(shop), env=env) as gateway:
        async with (
            httpx.AsyncClient(base_url=gateway.admin_url, timeout=10.0) as admin,
            httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as data,
        ):
            keys = {}
            for role in ("sales", "hr"):
                created = await admin.post(
                    "/admin/keys", headers=ADMIN, json={"subject": role, "roles": [role]}
                )
                assert created.status_code == 201, created.text
                keys[role] = {"x-api-key": created.json()["key"]}

            # Anonymous, or a wrong key: 401 problem+json that names no route.
            for headers in ({}, {"x-api-key": keys["hr"]["x-api-key"][:-3] + "abc"}):
                for doc in ("openapi.json", "asyncapi.json"):
                    refused = await admin.get(f"/api-docs/{doc}", headers=headers)
                    assert refused.status_code == 401
                    assert refused.headers["content-type"] == "application/problem+json"
                    assert "ApiKey" in refused.headers["www-authenticate"]
                    assert refused.json()["status"] == 401
                    assert "orders" not in refused.text
                    assert "payroll" not in refused.text

            openapi = {}
            asyncapi = {}
            for reader, headers in (*keys.items(), ("admin", ADMIN)):
                answer = await admin.get("/api-docs/openapi.json", headers=headers)
                assert answer.status_code == 200, answer.text
                assert answer.headers["cache-control"] == "no-store"
                openapi[reader] = answer.json()
                validate(openapi[reader])
                answer = await admin.get("/api-docs/asyncapi.json", headers=headers)
                assert answer.status_code == 200, answer.text
                asyncapi[reader] = answer.json()

            assert sorted(openapi["sales"]["paths"]) == [
                "/legacy/{rest}",
                "/orders/items/{item_id}",
                "/status",
            ]
            assert sorted(openapi["hr"]["paths"]) == ["/payroll/{id}", "/status"]
            assert set(openapi["admin"]["paths"]) == {
                *openapi["sales"]["paths"],
                *openapi["hr"]["paths"],
            }
            assert openapi["sales"]["info"]["title"] == "Acme API"

            merged = openapi["sales"]["paths"]["/orders/items/{item_id}"]["get"]
            assert merged["operationId"] == "orders.getItem"
            assert merged["security"] == [{"api_key": []}]
            assert merged["tags"] == ["shop"]
            assert sorted(merged["responses"]) == ["200", "401", "403", "413", "502", "503", "504"]
            schemes = openapi["sales"]["components"]["securitySchemes"]
            assert schemes == {
                "api_key": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "An API key; `Authorization: ApiKey <key>` works too",
                }
            }
            assert "orders.Item" in openapi["sales"]["components"]["schemas"]
            legacy = openapi["sales"]["paths"]["/legacy/{rest}"]["get"]
            assert "is unavailable" in legacy["description"]
            payroll = openapi["hr"]["paths"]["/payroll/{id}"]["get"]
            assert payroll["parameters"][0]["schema"] == {"type": "integer"}
            assert "429" in payroll["responses"]
            assert shop.hits["openapi"] == 1  # fetched once, kept for docs.cache_s

            # The merged operation is what the gateway really serves.
            item = await data.get("/orders/items/7", headers=keys["sales"])
            assert item.status_code == 200, item.text
            assert item.json() == {"id": 7, "path": "/items/7"}

            def addresses(reader: str) -> list[str]:
                return sorted(c["address"] for c in asyncapi[reader]["channels"].values())

            assert addresses("sales") == [
                "rg.evt.order-created",
                "rg.reply.{node}",
                "rg.req.echo",
                "rg.req.legacy",
                "rg.req.orders",
            ]
            assert addresses("hr") == [
                "rg.evt.salary-paid",
                "rg.reply.{node}",
                "rg.req.echo",
                "rg.req.payroll",
            ]
            envelope = asyncapi["hr"]["components"]["schemas"]["envelope"]
            assert envelope["schemaFormat"] == "application/vnd.apache.avro;version=1.9.0"
            assert envelope["schema"]["name"] == "Envelope"

            # A reload (SIGHUP) applies at once: payroll is now shown to sales too.
            changed = _config(shop)
            changed["routes"][2]["docs"]["roles"] = ["hr", "sales"]
            write_config(
                gateway.config_file,
                {**yaml.safe_load(gateway.config_file.read_text()), "routes": changed["routes"]},
            )
            assert gateway.proc is not None
            gateway.proc.send_signal(signal.SIGHUP)

            async def sales_paths() -> list[str]:
                answer = await admin.get("/api-docs/openapi.json", headers=keys["sales"])
                return sorted(answer.json()["paths"])

            deadline = time.monotonic() + 20
            while "/payroll/{id}" not in await sales_paths():
                assert time.monotonic() < deadline, "the reload did not reach the docs"
                await asyncio.sleep(0.1)

            # The admin API itself stays guarded, and its own Swagger UI is still there.
            assert (await admin.get("/admin/keys", headers=keys["sales"])).status_code == 401
            assert (await admin.get("/docs", headers=ADMIN)).status_code == 200


async def test_the_docs_page_and_its_script_load_under_a_strict_csp(tmp_path: Path) -> None:
    config = {"admin": {"token": ADMIN_TOKEN}, "workers": [{"type": "echo"}]}
    with running_up(tmp_path, "page", config) as gateway:
        async with httpx.AsyncClient(base_url=gateway.admin_url, timeout=10.0) as admin:
            page = await admin.get("/api-docs/")  # no credential: the page holds no data
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp
            assert "default-src 'none'" in csp
            assert "unsafe-inline" not in csp
            assert '<script src="docs.js" defer></script>' in page.text
            assert page.text.count("<script") == 1  # no inline script
            assert "http" not in page.text.replace('href="openapi.json"', "")  # nothing remote
            script = await admin.get("/api-docs/docs.js")
            assert script.status_code == 200
            assert script.headers["content-type"] == "text/javascript; charset=utf-8"
            assert "fetch(" in script.text
            style = await admin.get("/api-docs/docs.css")
            assert style.headers["content-type"] == "text/css; charset=utf-8"
            assert (await admin.get("/api-docs/nothing.js")).status_code == 404
            # No routes, but still documents: the admin token reads them.
            document = (await admin.get("/api-docs/openapi.json", headers=ADMIN)).json()
            assert document["paths"] == {}
            validate(document)
