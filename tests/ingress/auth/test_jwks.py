"""Key sets served by a local identity provider: rotation costs one fetch, unknown
kids cannot make the gateway hammer the provider, and cached keys keep working while
it is down."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from contracts.config import Config
from tests.ingress.auth.idp import (
    AUDIENCE,
    ISSUER,
    Gateway,
    IdentityProvider,
    claims,
    gateway,
    identity_provider,
    public_jwk,
    raw_token,
    rsa_key,
    sign,
)
from tests.support.processes import NatsServer

pytestmark = pytest.mark.nats

REFRESH_S = 1.0


def _config(idp: IdentityProvider, **issuer: Any) -> dict[str, Any]:
    return {
        "issuers": {
            "idp": {
                "issuer": ISSUER,
                "audience": [AUDIENCE],
                "jwks_url": f"{idp.url}/jwks",
                "jwks_refresh_s": REFRESH_S,
                **issuer,
            }
        },
        "routes": [
            {
                "name": "orders",
                "when": {"path": "/orders"},
                "to": {"type": "worker", "topic": "echo"},
                "policies": [{"type": "jwt"}],
            }
        ],
    }


@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    async with identity_provider() as provider:
        provider.keys = [public_jwk(rsa_key("idp"), "k1")]
        yield provider


@pytest.fixture
async def gw(nats_server: NatsServer, idp: IdentityProvider) -> AsyncIterator[Gateway]:
    async with gateway(nats_server.url, _config(idp)) as running:
        yield running


async def _status(session: aiohttp.ClientSession, gw: Gateway, token: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{gw.url}/orders", headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def test_a_rotated_key_is_picked_up_with_one_fetch(
    idp: IdentityProvider, gw: Gateway
) -> None:
    async with aiohttp.ClientSession() as session:
        assert (await _status(session, gw, sign(claims(), rsa_key("idp"))))[0] == 200
        assert idp.hits["jwks"] == 1
        idp.keys = [public_jwk(rsa_key("idp-2"), "k2")]  # the provider rotates
        await asyncio.sleep(REFRESH_S)
        for sub in ("bob", "carol", "dave"):
            token = sign(claims(sub=sub), rsa_key("idp-2"), kid="k2")
            status, body = await _status(session, gw, token)
            assert (status, body["principal"]) == (200, sub)
        assert idp.hits["jwks"] == 2


async def test_a_thousand_unknown_kids_fetch_at_most_once_per_interval(
    idp: IdentityProvider, gw: Gateway
) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50)) as session:
        assert (await _status(session, gw, sign(claims(), rsa_key("idp"))))[0] == 200
        await asyncio.sleep(REFRESH_S)
        before = idp.hits["jwks"]
        # Unknown kids are refused before any signature check: a fake one will do.
        forged = [
            raw_token({"alg": "RS256", "kid": uuid.uuid4().hex}, claims(), b"s" * 256)
            for _ in range(1000)
        ]
        started = time.monotonic()
        statuses = await asyncio.gather(*(_status(session, gw, t) for t in forged))
        elapsed = time.monotonic() - started
    assert {status for status, _ in statuses} == {401}
    fetches = idp.hits["jwks"] - before
    assert 1 <= fetches <= 1 + math.floor(elapsed / REFRESH_S), (fetches, elapsed)


async def test_known_keys_keep_working_while_the_provider_is_down(
    idp: IdentityProvider, gw: Gateway
) -> None:
    async with aiohttp.ClientSession() as session:
        assert (await _status(session, gw, sign(claims(), rsa_key("idp"))))[0] == 200
        await idp.stop()
        await asyncio.sleep(REFRESH_S)
        for sub in ("erin", "frank"):  # new tokens: not in the verified-token cache
            status, body = await _status(session, gw, sign(claims(sub=sub), rsa_key("idp")))
            assert (status, body["principal"]) == (200, sub)
        # An unknown kid tries the provider, fails, and is refused as usual.
        stranger = sign(claims(), rsa_key("idp-3"), kid="k3")
        status, body = await _status(session, gw, stranger)
        assert (status, body["type"].rsplit("/", 1)[1]) == (401, "unauthenticated")
        status, _ = await _status(session, gw, sign(claims(sub="gina"), rsa_key("idp")))
        assert status == 200


async def test_a_broken_key_set_keeps_the_cached_keys_and_bad_keys_are_skipped(
    idp: IdentityProvider, gw: Gateway
) -> None:
    async with aiohttp.ClientSession() as session:
        assert (await _status(session, gw, sign(claims(), rsa_key("idp"))))[0] == 200
        for broken in (b"<html>oops</html>", b'{"keys": "none"}', b'{"keys": [{"kty": "RSA"}]}'):
            idp.jwks_raw = broken
            await asyncio.sleep(REFRESH_S)
            stranger = sign(claims(), rsa_key("idp-2"), kid="k2")
            assert (await _status(session, gw, stranger))[0] == 401  # fetched, unusable
            status, _ = await _status(session, gw, sign(claims(sub=str(broken)), rsa_key("idp")))
            assert status == 200
        good = public_jwk(rsa_key("idp-2"), "k2")
        bad = {"kty": "RSA", "kid": "bad", "n": 5, "e": "AQAB"}
        idp.jwks_raw = orjson.dumps({"keys": [bad, {"kty": "EC", "crv": "P-256"}, good]})
        await asyncio.sleep(REFRESH_S)
        status, _ = await _status(session, gw, sign(claims(), rsa_key("idp-2"), kid="k2"))
        assert status == 200
        assert idp.hits["jwks"] == 5


async def test_no_key_set_yet_and_the_provider_down_is_503_until_it_is_back(
    nats_server: NatsServer, idp: IdentityProvider
) -> None:
    await idp.stop()
    async with gateway(nats_server.url, _config(idp)) as gw, aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {sign(claims(), rsa_key('idp'))}"}
        async with session.get(f"{gw.url}/orders", headers=headers) as response:
            body = await response.json(content_type=None)
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert body["type"].endswith("/auth-unavailable")
        await idp.start()  # same port
        await asyncio.sleep(REFRESH_S)
        async with session.get(f"{gw.url}/orders", headers=headers) as response:
            assert response.status == 200


async def test_an_old_key_set_is_refreshed_in_the_background(
    nats_server: NatsServer, idp: IdentityProvider
) -> None:
    config = _config(idp, jwks_max_age_s=0.3)
    async with gateway(nats_server.url, config) as gw, aiohttp.ClientSession() as session:
        assert (await _status(session, gw, sign(claims(), rsa_key("idp"))))[0] == 200
        assert idp.hits["jwks"] == 1
        await asyncio.sleep(REFRESH_S)  # older than max age, and one interval since the fetch
        assert (await _status(session, gw, sign(claims(sub="h"), rsa_key("idp"))))[0] == 200
        deadline = time.monotonic() + 5
        while idp.hits["jwks"] < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert idp.hits["jwks"] == 2


async def test_a_reload_keeps_the_key_set_and_drops_verified_tokens(
    idp: IdentityProvider, gw: Gateway
) -> None:
    async with aiohttp.ClientSession() as session:
        token = sign(claims(), rsa_key("idp"))
        assert (await _status(session, gw, token))[0] == 200
        assert len(gw.app.policy_state.auth.tokens) == 1
        gw.app.reload(Config(**_config(idp), bus={"prefix": gw.app.bus.topics.prefix}))
        assert len(gw.app.policy_state.auth.tokens) == 0
        assert (await _status(session, gw, token))[0] == 200
        assert idp.hits["jwks"] == 1
