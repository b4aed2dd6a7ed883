"""The `introspection` policy against a local authorization server (RFC 7662): active
and inactive tokens, both cached, one call for concurrent requests, scopes from the
answer, and a 503 (never a 500, never a 401) when the server cannot answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.ingress.auth.idp import (
    CLIENT_ID,
    CLIENT_SECRET,
    Gateway,
    IdentityProvider,
    gateway,
    identity_provider,
)
from tests.support.processes import NatsServer

pytestmark = pytest.mark.nats

NEGATIVE_S = 0.5


def _server(idp: IdentityProvider, secret: str = CLIENT_SECRET) -> dict[str, Any]:
    return {
        "introspection_url": f"{idp.url}/introspect",
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "negative_cache_s": NEGATIVE_S,
        "claims": {"tenant": "org"},
    }


def _config(idp: IdentityProvider) -> dict[str, Any]:
    def route(name: str, server: str, **policy: Any) -> dict[str, Any]:
        return {
            "name": name,
            "when": {"path": f"/{name}"},
            "to": {"type": "worker", "topic": "whoami"},
            "policies": [{"type": "introspection", "server": server, **policy}],
        }

    return {
        "authorization_servers": {
            "as": _server(idp),
            "misconfigured": _server(idp, secret="wrong"),
            "form": {**_server(idp), "auth_method": "client_secret_post"},
        },
        "routes": [
            route("orders", "as"),
            route("refunds", "as", scopes=["orders:refund"]),
            route("wrong-secret", "misconfigured"),
            route("form", "form"),
        ],
    }


@pytest.fixture
async def setup(nats_server: NatsServer) -> AsyncIterator[tuple[IdentityProvider, Gateway]]:
    async with identity_provider() as idp:
        now = int(time.time())
        idp.tokens = {
            "active-1": {
                "active": True,
                "sub": "bob",
                "client_id": "shop",
                "scope": "orders:read orders:write",
                "org": "acme",
                "exp": now + 300,
            },
            "client-only": {"active": True, "client_id": "batch-job", "scope": "orders:read"},
            "expired": {"active": True, "sub": "old", "exp": now - 10},
            "revoked": {"active": False},
        }
        async with gateway(nats_server.url, _config(idp)) as gw:
            yield idp, gw


async def _call(
    session: aiohttp.ClientSession, gw: Gateway, path: str, token: str
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{gw.url}{path}", headers=headers) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def test_an_active_token_passes_with_its_principal_and_is_cached(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    idp, gw = setup
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            status, principal, _ = await _call(session, gw, "/orders", "active-1")
            assert status == 200
            assert principal == {
                "subject": "bob",
                "tenant": "acme",
                "roles": [],
                "scopes": ["orders:read", "orders:write"],
                "tier": None,
                "authmethod": "introspection",
            }
        assert idp.hits["introspect"] == 1
        status, principal, _ = await _call(session, gw, "/orders", "client-only")
        assert (status, principal["subject"]) == (200, "batch-job")
        status, principal, _ = await _call(
            session, gw, "/form", "active-1"
        )  # credentials in the form
        assert (status, principal["subject"]) == (200, "bob")


async def test_inactive_tokens_are_401_and_remembered_briefly(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    idp, gw = setup
    async with aiohttp.ClientSession() as session:
        for token in ("revoked", "unknown-to-the-server", "expired"):
            status, body, headers = await _call(session, gw, "/orders", token)
            assert status == 401, token
            assert headers["WWW-Authenticate"].startswith(
                'Bearer realm="relaygate", error="invalid_token"'
            )
            assert body["type"].endswith("/unauthenticated")
        assert idp.hits["introspect"] == 3
        for _ in range(5):
            assert (await _call(session, gw, "/orders", "revoked"))[0] == 401
        assert idp.hits["introspect"] == 3
        await asyncio.sleep(NEGATIVE_S + 0.1)
        idp.tokens["revoked"] = {"active": True, "sub": "reinstated"}
        status, principal, _ = await _call(session, gw, "/orders", "revoked")
        assert (status, principal["subject"]) == (200, "reinstated")
        assert idp.hits["introspect"] == 4


async def test_concurrent_requests_with_one_token_make_one_call(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    idp, gw = setup
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(_call(session, gw, "/orders", "active-1") for _ in range(30))
        )
    assert {status for status, _, _ in results} == {200}
    assert idp.hits["introspect"] == 1


async def test_a_missing_scope_is_403(setup: tuple[IdentityProvider, Gateway]) -> None:
    idp, gw = setup
    async with aiohttp.ClientSession() as session:
        status, _, headers = await _call(session, gw, "/refunds", "active-1")
        assert status == 403
        assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]
        idp.tokens["refunder"] = {"active": True, "sub": "r", "scope": "orders:refund"}
        assert (await _call(session, gw, "/refunds", "refunder"))[0] == 200


async def test_server_down_or_refusing_the_gateway_is_503_not_500(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    idp, gw = setup
    async with aiohttp.ClientSession() as session:
        assert (await _call(session, gw, "/orders", "active-1"))[0] == 200
        # The server refuses the gateway's own client credentials: not the caller's fault.
        status, body, headers = await _call(session, gw, "/wrong-secret", "active-1")
        assert (status, body["type"].rsplit("/", 1)[1]) == (503, "auth-unavailable")
        assert headers["Retry-After"] == "1"
        await idp.stop()
        status, body, headers = await _call(session, gw, "/orders", "never-seen")
        assert (status, body["type"].rsplit("/", 1)[1]) == (503, "auth-unavailable")
        assert body["status"] == 503
        assert headers["Content-Type"] == "application/problem+json"
        # What was already known still answers.
        assert (await _call(session, gw, "/orders", "active-1"))[0] == 200
