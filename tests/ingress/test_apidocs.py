"""The API documents built from a config (OpenAPI 3.1, checked with openapi-spec-validator;
AsyncAPI 3.0), filtered by the reader's roles; and readers authenticated by the
gateway's own policies (a JWT of a static key, an API key in a real SQLite store)."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from openapi_spec_validator import validate

from contracts.config import Config, ConfigError, load_config
from ingress.apidocs.access import DocsAccess, Reader, reader_policies
from ingress.apidocs.asyncapi import AVRO_FORMAT, build_asyncapi, envelope_schema
from ingress.apidocs.fetch import Fetched
from ingress.apidocs.openapi import build_openapi, openapi_path
from ingress.policies import PolicyState
from ingress.request import Refused
from tests.support.gateway import write_config

SECRET = b"docs-test-hmac-secret-0123456789abcdef"
ADMIN_TOKEN = "docs-admin-token-0123456789"
ADMIN = Reader("admin", None)
SALES = Reader("ann", frozenset({"sales"}))
HR = Reader("bob", frozenset({"hr", "staff"}))


def _config(**extra: Any) -> Config:
    data: dict[str, Any] = {
        "admin": {"token": ADMIN_TOKEN},
        "auth_server": {"issuer": "https://api.example.test", "scopes": ["orders:read"]},
        "issuers": {
            "idp": {
                "issuer": "https://idp.test",
                "audience": ["gateway"],
                "algorithms": ["HS256"],
                "keys": [{"jwk": {"kty": "oct", "k": base64.urlsafe_b64encode(SECRET).decode()}}],
            }
        },
        "routes": [
            {
                "name": "orders",
                "when": {"path": "/orders/{rest:path}", "methods": ["GET", "POST"]},
                "to": {"type": "upstream", "upstream": "shop", "path": "/{rest}"},
                "policies": [
                    {"type": "api_key", "scopes": ["orders"]},
                    {"type": "rate_limit", "limits": [{"requests": 5, "window_s": 1}]},
                ],
                "docs": {"roles": ["sales"], "openapi_url": "/openapi.json", "tags": ["shop"]},
            },
            {
                "name": "payroll",
                "when": {"path": "/payroll/{id:int}/{file}", "methods": ["GET", "PUT"]},
                "to": {"type": "worker", "topic": "payroll.v1"},
                "policies": [{"type": "jwt", "scopes": ["hr:read"], "roles": ["hr"]}],
                "docs": {"roles": ["hr"], "summary": "A salary file"},
            },
            {
                "name": "partners",
                "when": {"path": "/partners", "headers": {"x-partner": "yes"}},
                "to": {"type": "worker", "topic": "partners"},
                "policies": [{"type": "oauth", "scopes": ["orders:read"]}],
                "docs": {"roles": []},
            },
            {
                "name": "status",
                "when": {"path": "/status", "methods": ["GET"]},
                "to": {"type": "worker", "topic": "echo"},
                "policies": [{"type": "ip_rules", "allow": ["127.0.0.0/8"]}],
            },
        ],
        "upstreams": {"shop": {"url": "http://127.0.0.1:9/api"}},
        "docs": {
            "events": [
                {"name": "order.created", "roles": ["sales"], "summary": "An order was placed"},
                {"name": "salary.paid", "roles": ["hr"]},
            ]
        },
    }
    data.update(extra)
    return Config.model_validate(data)


SHOP: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "shop", "version": "2"},
    "paths": {
        "/items/{item_id}": {
            "parameters": [
                {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}
            ],
            "get": {
                "operationId": "getItem",
                "servers": [{"url": "http://shop.internal:8000"}],
                "responses": {
                    "200": {
                        "description": "The item",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Item"}}
                        },
                    },
                    "404": {"description": "No such item"},
                },
            },
            "delete": {"operationId": "dropItem", "responses": {"204": {"description": "Gone"}}},
        },
        "/items/{item_id}/photo": {"delete": {"responses": {"204": {"description": "Gone"}}}},
        "/items": {"post": {"responses": {"201": {"description": "Created"}}}},
    },
    "components": {
        "schemas": {
            "Item": {"type": "object", "properties": {"tag": {"$ref": "#/components/schemas/Tag"}}},
            "Tag": {"type": "string"},
        },
        "securitySchemes": {"upstream-own": {"type": "http", "scheme": "basic"}},
    },
}


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _references(value)]
    return []


def _resolves(document: dict[str, Any], ref: str) -> bool:
    """A local JSON pointer reference (`#/a/b~1c`) names something in the document."""
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_path_templates_become_typed_openapi_parameters() -> None:
    path, parameters = openapi_path("/t/{tenant}/users/{id:int}/files/{rest:path}")
    assert path == "/t/{tenant}/users/{id}/files/{rest}"
    assert [(p["name"], p["schema"]["type"], p["in"], p["required"]) for p in parameters] == [
        ("tenant", "string", "path", True),
        ("id", "integer", "path", True),
        ("rest", "string", "path", True),
    ]
    assert parameters[2]["x-relaygate-converter"] == "path"


def test_each_reader_sees_only_the_routes_its_roles_allow() -> None:
    config = _config()
    fetched = {"orders": Fetched("http://127.0.0.1:9/api/openapi.json", document=SHOP)}
    seen = {}
    for reader in (SALES, HR, ADMIN):
        document = build_openapi(config, reader, fetched)
        validate(document)
        seen[reader.subject] = sorted(document["paths"])
    assert seen["ann"] == ["/orders/items", "/orders/items/{item_id}", "/status"]
    assert seen["bob"] == ["/payroll/{id}/{file}", "/status"]
    # `roles: []` (partners): only the admin token.
    assert seen["admin"] == [*seen["ann"][:2], "/partners", "/payroll/{id}/{file}", "/status"]


def test_security_schemes_and_problem_responses_follow_the_route_policies() -> None:
    document = build_openapi(_config(), ADMIN, {})
    validate(document)
    schemes = document["components"]["securitySchemes"]
    assert schemes["api_key"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key; `Authorization: ApiKey <key>` works too",
    }
    assert schemes["jwt"]["scheme"] == "bearer"
    assert schemes["jwt"]["bearerFormat"] == "JWT"
    assert schemes["oauth"] == {
        "type": "oauth2",
        "flows": {
            "clientCredentials": {
                "tokenUrl": "https://api.example.test/oauth/token",
                "scopes": {"orders:read": "orders:read"},
            }
        },
    }
    paths = document["paths"]
    orders = paths["/orders/{rest}"]
    assert set(orders) == {"get", "post"}  # the route's methods only
    assert orders["get"]["security"] == [{"api_key": ["orders"]}]
    assert sorted(orders["get"]["responses"]) == [
        *["401", "403", "413", "429", "502", "503", "504"],
        "default",
    ]
    assert "unavailable" not in orders["get"].get("description", "")  # nothing fetched
    payroll = paths["/payroll/{id}/{file}"]["put"]
    assert payroll["security"] == [{"jwt": ["hr:read"]}]
    assert "requestBody" in payroll
    assert sorted(payroll["responses"]) == ["401", "403", "413", "503", "504", "default"]
    partners = paths["/partners"]
    assert partners["x-relaygate-any-method"] is True
    assert partners["get"]["security"] == [{"oauth": ["orders:read"]}]
    header = partners["get"]["parameters"][0]
    assert (header["name"], header["in"], header["schema"]) == (
        "x-partner",
        "header",
        {"const": "yes"},
    )
    status = paths["/status"]["get"]
    assert status["security"] == []  # ip rules: no credential
    assert sorted(status["responses"]) == ["403", "413", "503", "504", "default"]
    problem = document["components"]["responses"]["429"]
    assert "application/problem+json" in problem["content"]
    assert "Retry-After" in problem["headers"]
    assert document["servers"] == [{"url": "https://api.example.test"}]


def test_upstream_operations_are_merged_under_the_route_path() -> None:
    fetched = {"orders": Fetched("http://127.0.0.1:9/api/openapi.json", document=SHOP)}
    document = build_openapi(_config(), SALES, fetched)
    validate(document)
    item = document["paths"]["/orders/items/{item_id}"]
    assert set(item) == {"get"}  # DELETE is not a method of the route
    get = item["get"]
    assert get["operationId"] == "orders.getItem"
    assert "servers" not in get  # callers go through the gateway
    assert get["tags"] == ["shop"]
    assert get["security"] == [{"api_key": ["orders"]}]  # the gateway's, not the upstream's
    assert [p["name"] for p in get["parameters"]] == ["item_id"]
    schema = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/orders.Item"}
    assert get["responses"]["404"] == {"description": "No such item"}
    assert get["responses"]["429"] == {"$ref": "#/components/responses/429"}
    schemas = document["components"]["schemas"]
    assert schemas["orders.Item"]["properties"]["tag"] == {
        "$ref": "#/components/schemas/orders.Tag"
    }
    assert "orders.upstream-own" not in document["components"]["securitySchemes"]
    assert document["paths"]["/orders/items"]["post"]["operationId"] == "orders.post/items"


def test_upstream_path_unchanged_keeps_only_the_operations_the_route_reaches() -> None:
    config = _config()
    orders = config.routes[0]
    unchanged = orders.model_copy(update={"to": orders.to.model_copy(update={"path": None})})
    config = config.model_copy(update={"routes": [unchanged]})
    x = {"name": "x", "in": "path", "required": True, "schema": {"type": "string"}}
    reached = {"/orders/{x}": {"get": {"parameters": [x], "responses": {}}}}
    shop = {**SHOP, "paths": {**reached, **SHOP["paths"]}}
    document = build_openapi(config, ADMIN, {"orders": Fetched("u", document=shop)})
    validate(document)
    assert sorted(document["paths"]) == ["/orders/{x}"]


def test_a_failed_upstream_document_leaves_the_route_listed_with_a_note() -> None:
    fetched = {"orders": Fetched("http://127.0.0.1:9/api/openapi.json", error="timed out")}
    document = build_openapi(_config(), SALES, fetched)
    validate(document)
    get = document["paths"]["/orders/{rest}"]["get"]
    assert get["description"] == (
        "The upstream's API description (http://127.0.0.1:9/api/openapi.json) is unavailable: "
        "timed out"
    )


def test_asyncapi_lists_the_request_reply_and_event_channels_a_reader_may_see() -> None:
    config = _config(bus={"url": "nats://user:pw@10.1.2.3:4222", "prefix": "acme"})
    envelope = envelope_schema()
    sales = build_asyncapi(config, SALES, envelope)
    hr = build_asyncapi(config, HR, envelope)
    addresses = {k: v["address"] for k, v in sales["channels"].items()}
    assert addresses == {
        "reply": "acme.reply.{node}",
        "request_orders": "acme.req.orders",
        "request_echo": "acme.req.echo",
        "event_order_created": "acme.evt.order.created",
    }
    assert sorted(v["address"] for v in hr["channels"].values()) == [
        "acme.evt.salary.paid",
        "acme.reply.{node}",
        "acme.req.echo",
        "acme.req.payroll.v1",
    ]
    assert sales["asyncapi"] == "3.0.0"
    assert sales["servers"] == {"bus": {"host": "10.1.2.3:4222", "protocol": "nats"}}
    serve = sales["operations"]["serve_orders"]
    assert serve["action"] == "receive"
    assert serve["channel"] == {"$ref": "#/channels/request_orders"}
    assert serve["reply"]["channel"] == {"$ref": "#/channels/reply"}
    assert sales["operations"]["consume_order_created"]["summary"] == "An order was placed"
    payload = sales["components"]["schemas"]["envelope"]
    assert payload["schemaFormat"] == AVRO_FORMAT == "application/vnd.apache.avro;version=1.9.0"
    assert payload["schema"]["name"] == "Envelope"
    assert sales["components"]["messages"]["httpRequest"]["payload"] == {
        "$ref": "#/components/schemas/envelope"
    }
    for document in (sales, hr):
        references = _references(document)
        assert references
        assert [ref for ref in references if not _resolves(document, ref)] == []
        for section in ("channels", "operations"):
            assert all(re.fullmatch(r"[A-Za-z0-9_-]+", key) for key in document[section])
    nobody = build_asyncapi(config, Reader("eve", frozenset({"guest"})), envelope)
    assert sorted(nobody["channels"]) == ["reply", "request_echo"]  # /status: no docs.roles


def test_readers_sign_in_with_the_routes_policies_without_their_requirements() -> None:
    policies = reader_policies(_config())
    assert [p.type for p in policies] == ["api_key", "jwt", "oauth"]
    assert all(not p.scopes for p in policies)
    own = _config(docs={"auth": [{"type": "api_key", "header": "X-Docs-Key"}]})
    assert [(p.type, getattr(p, "header", None)) for p in reader_policies(own)] == [
        ("api_key", "X-Docs-Key")
    ]


def test_docs_config_errors_name_their_yaml_path(tmp_path: Path) -> None:
    bad = write_config(
        tmp_path / "bad.yaml",
        {
            "docs": {"auth": [{"type": "jwt", "issuers": ["nope"]}, {"type": "rate_limit"}]},
            "routes": [
                {
                    "name": "a",
                    "when": {"path": "/a"},
                    "to": {"type": "worker", "topic": "a"},
                    "docs": {"openapi_url": "ftp://x/openapi.json"},
                }
            ],
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    text = str(caught.value)
    assert "docs.auth[1]" in text
    assert "routes[0].docs.openapi_url" in text


def _jwt(roles: list[str]) -> str:
    now = int(time.time())
    claims = {"iss": "https://idp.test", "aud": "gateway", "sub": "jo", "roles": roles}
    return pyjwt.encode({**claims, "iat": now, "exp": now + 300}, SECRET, algorithm="HS256")


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[tuple[Config, PolicyState]]:
    config = _config(state={"dir": str(tmp_path)})
    policy_state = PolicyState(config)
    yield config, policy_state
    await policy_state.aclose()


async def test_readers_are_authenticated_by_the_gateway_policies(
    state: tuple[Config, PolicyState],
) -> None:
    config, policy_state = state
    access = DocsAccess(config, policy_state)
    keys = policy_state.credentials.api_keys
    sales_key, _ = await keys.create({"subject": "ann", "roles": ["sales"]})
    scoped_key, _ = await keys.create({"subject": "cy", "roles": ["sales"], "routes": ["orders"]})

    async def who(**headers: str) -> Reader | Refused:
        return await access.authenticate("/api-docs/openapi.json", list(headers.items()), "::1")

    assert await who(**{"x-api-key": sales_key}) == Reader("ann", frozenset({"sales"}))
    assert await who(authorization=f"ApiKey {sales_key}") == Reader("ann", frozenset({"sales"}))
    assert await who(authorization=f"Bearer {_jwt(['hr'])}") == Reader("jo", frozenset({"hr"}))
    assert await who(authorization=f"Bearer {ADMIN_TOKEN}") == ADMIN

    anonymous = await who()
    assert isinstance(anonymous, Refused)
    assert anonymous.status == 401
    challenges = b" ".join(v for k, v in anonymous.headers if k == b"www-authenticate")
    assert b"ApiKey" in challenges
    assert b'Bearer realm="relaygate-admin"' in challenges
    for wrong in ({"x-api-key": sales_key[:-2] + "xx"}, {"authorization": "Bearer nonsense"}):
        refused = await who(**wrong)
        assert isinstance(refused, Refused)
        assert refused.status == 401
    scoped = await who(**{"x-api-key": scoped_key})  # a key scoped to routes: not the docs
    assert isinstance(scoped, Refused)
    assert scoped.status == 403


async def test_no_reader_policies_and_no_admin_token_refuse_everyone(tmp_path: Path) -> None:
    config = Config.model_validate({"state": {"dir": str(tmp_path)}})
    policy_state = PolicyState(config)
    try:
        refused = await DocsAccess(config, policy_state).authenticate("/", [], "127.0.0.1")
    finally:
        await policy_state.aclose()
    assert isinstance(refused, Refused)
    assert refused.status == 401
    assert "set docs.auth or admin.token" in refused.detail
