"""The `jwt` policy through the real ingress: the principal the worker receives, the
challenges (401 without and with a bad token, 403 for a missing scope or role), keys
given in the config, and the verified-token cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from contracts.config import Config, ConfigError, load_config
from tests.ingress.auth.idp import (
    AUDIENCE,
    ISSUER,
    Gateway,
    IdentityProvider,
    b64,
    claims,
    ec_key,
    identity_provider,
    idp_and_gateway,
    public_jwk,
    public_pem,
    rsa_key,
    sign,
)
from tests.support.gateway import IngressNode, RelaygateRole, stop_all, write_config
from tests.support.processes import NatsServer

pytestmark = pytest.mark.nats

HMAC_SECRET = b"a-shared-secret-of-at-least-32-bytes!!"
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def _route(name: str, topic: str = "whoami", **policy: Any) -> dict[str, Any]:
    return {
        "name": name,
        "when": {"path": f"/{name}"},
        "to": {"type": "worker", "topic": topic},
        "policies": [{"type": "jwt", **policy}],
    }


def _config(idp: IdentityProvider) -> dict[str, Any]:
    return {
        "issuers": {
            "idp": {
                "issuer": ISSUER,
                "audience": [AUDIENCE, "other-api"],
                "jwks_url": f"{idp.url}/jwks",
                "leeway_s": 0,
                "claims": {
                    "tenant": "tid",
                    "roles": ["realm_access.roles", "roles"],
                    "tier": "plan",
                },
            },
            "static": {
                "issuer": "https://static.test/",
                "audience": [AUDIENCE],
                "algorithms": ["RS256", "ES256", "EdDSA"],
                "keys": [
                    {"pem": public_pem(rsa_key("static")).decode()},
                    {"kid": "ec", "jwk": public_jwk(ec_key("static"), "ignored")},
                    {"kid": "ed", "jwk": OKPAlgorithm.to_jwk(ED_KEY.public_key(), as_dict=True)},
                ],
                "tenant": "static-tenant",
            },
            "shared": {
                "issuer": "https://hmac.test/",
                "audience": [AUDIENCE],
                "algorithms": ["HS256"],
                "keys": [{"jwk": {"kty": "oct", "k": b64(HMAC_SECRET)}}],
            },
        },
        "routes": [
            _route("whoami", realm="orders"),
            _route("read", scopes=["orders:read"]),
            _route("write", scopes=["orders:write", "orders:refund"]),
            _route("admin", roles=["admin", "owner"]),
            _route("static-only", issuers=["static"]),
            _route("maybe", optional=True),
        ],
    }


@pytest.fixture
async def setup(nats_server: NatsServer) -> AsyncIterator[tuple[IdentityProvider, Gateway]]:
    async with idp_and_gateway(nats_server.url, _config) as started:
        yield started


async def _call(
    gw: Gateway, path: str, token: str | None = None, scheme: str = "Bearer"
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw.url}{path}", headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None), dict(response.headers)


async def test_the_worker_receives_the_principal_mapped_from_the_claims(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    _, gw = setup
    token = sign(
        claims(plan="partner", realm_access={"roles": ["auditor"]}, aud=["x", "other-api"]),
        rsa_key("idp"),
    )
    status, principal, _ = await _call(gw, "/whoami", token)
    assert status == 200
    assert principal == {
        "subject": "alice",
        "tenant": "acme",
        "roles": ["auditor"],
        "scopes": ["orders:read", "orders:write"],
        "tier": "partner",
        "authmethod": "jwt",
    }
    scp = sign(claims(scope=None, scp=["a", "b"], roles="r1 r2", tid=None), rsa_key("idp"))
    status, principal, _ = await _call(gw, "/whoami", scp)
    assert (status, principal["scopes"], principal["roles"]) == (200, ["a", "b"], ["r1", "r2"])
    assert principal["tenant"] is None


async def test_keys_from_the_config_pem_ec_jwk_eddsa_and_hmac(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    _, gw = setup
    iss = "https://static.test/"
    cases = {
        "rsa pem, no kid": sign(claims(iss=iss, sub="r"), rsa_key("static"), kid="anything"),
        "ec jwk": sign(claims(iss=iss, sub="e"), ec_key("static"), kid="ec", alg="ES256"),
        "ed25519 jwk": sign(claims(iss=iss, sub="d"), ED_KEY, kid="ed", alg="EdDSA"),
        "hmac": sign(claims(iss="https://hmac.test/", sub="h"), HMAC_SECRET, alg="HS256"),
    }
    for name, token in cases.items():
        status, principal, _ = await _call(gw, "/whoami", token)
        assert status == 200, f"{name}: {principal}"
    status, principal, _ = await _call(gw, "/whoami", cases["rsa pem, no kid"])
    assert principal["tenant"] == "static-tenant"
    # An ES256 token must not verify against the EdDSA key, whatever its kid says.
    wrong = sign(claims(iss=iss), ec_key("static"), kid="ed", alg="ES256")
    assert (await _call(gw, "/whoami", wrong))[0] == 401


async def test_no_token_gets_a_bare_challenge_a_bad_one_invalid_token(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    _, gw = setup
    for token, scheme in ((None, "Bearer"), ("dXNlcjpwdw==", "Basic"), ("", "Bearer")):
        status, body, headers = await _call(gw, "/whoami", token, scheme)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="orders"'
        assert body["type"].endswith("/unauthenticated")
        assert headers["Content-Type"] == "application/problem+json"
    status, body, headers = await _call(gw, "/whoami", "abc.def.ghi")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Bearer realm="orders", error="invalid_token"')


async def test_missing_scope_or_role_is_403_insufficient_scope(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    _, gw = setup
    key = rsa_key("idp")
    reader = sign(claims(scope="orders:read", roles=["clerk"]), key)
    assert (await _call(gw, "/read", reader))[0] == 200
    status, body, headers = await _call(gw, "/write", reader)
    assert status == 403
    assert body["type"].endswith("/insufficient-scope")
    assert headers["WWW-Authenticate"] == (
        'Bearer realm="relaygate", error="insufficient_scope", '
        'error_description="the access token lacks scope \\"orders:refund\\" \\"orders:write\\""'
    )
    writer = sign(claims(scope="orders:write orders:refund"), key)
    assert (await _call(gw, "/write", writer))[0] == 200
    status, body, _ = await _call(gw, "/admin", reader)
    assert status == 403
    assert "roles" in body["detail"]
    owner = sign(claims(roles=["clerk", "owner"]), key)
    assert (await _call(gw, "/admin", owner))[0] == 200


async def test_a_route_can_accept_only_some_issuers(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    _, gw = setup
    idp_token = sign(claims(), rsa_key("idp"))
    assert (await _call(gw, "/whoami", idp_token))[0] == 200  # now in the cache
    assert (await _call(gw, "/static-only", idp_token))[0] == 401
    static = sign(claims(iss="https://static.test/"), rsa_key("static"))
    assert (await _call(gw, "/static-only", static))[0] == 200


async def test_optional_passes_without_a_token_but_not_with_a_bad_one(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    _, gw = setup
    status, principal, _ = await _call(gw, "/maybe")
    assert (status, principal) == (200, None)
    assert (await _call(gw, "/maybe", "x.y.z"))[0] == 401


async def test_a_verified_token_is_cached_but_not_past_its_exp(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    _, gw = setup
    token = sign(claims(exp=int(time.time()) + 2), rsa_key("idp"))
    tokens = gw.app.policy_state.auth.tokens
    for _ in range(5):
        assert (await _call(gw, "/whoami", token))[0] == 200
    assert len(tokens) == 1
    await asyncio.sleep(2.2)
    status, body, _ = await _call(gw, "/whoami", token)
    assert (status, body["detail"]) == (401, "the access token has expired")


def _config_problems(path: Path, config: dict[str, Any]) -> str:
    """What loading `config` from a file says is wrong, one problem a line."""
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(path, config))
    return "\n".join(caught.value.problems)


def test_config_errors_name_their_yaml_path(tmp_path: Any) -> None:
    issuer = {"issuer": ISSUER, "audience": [AUDIENCE], "jwks_url": "http://127.0.0.1:9/jwks"}
    route = {"name": "r", "when": {"path": "/r"}, "to": {"type": "worker", "topic": "t"}}
    bad = {
        "issuers": {
            "mixed": {**issuer, "algorithms": ["HS256", "RS256"]},
            "nokeys": {"issuer": "https://n/", "audience": ["a"]},
            "badpem": {"issuer": "https://p/", "audience": ["a"], "keys": [{"pem": "nope"}]},
        },
        "routes": [{**route, "policies": [{"type": "jwt", "issuers": ["missing"]}]}],
    }
    text = _config_problems(tmp_path / "bad.yaml", bad)
    assert "issuers.mixed: do not mix HS* with public-key algorithms" in text
    assert "issuers.nokeys: give `jwks_url` or `keys`" in text
    assert "issuers.badpem.keys[0]: pem: not a PEM public key" in text
    refs = {
        "issuers": {"a": issuer, "b": issuer},
        "routes": [
            {
                **route,
                "policies": [
                    {"type": "jwt", "issuers": ["c"]},
                    {"type": "introspection", "server": "as"},
                ],
            }
        ],
    }
    text = _config_problems(tmp_path / "refs.yaml", refs)
    assert "routes[0].policies[0].issuers[0]: unknown issuer 'c' (a, b)" in text
    assert "routes[0].policies[1].server: unknown authorization server 'as'" in text
    assert "issuers.b.issuer: 'https://idp.test/' is also issuer 'a'" in text
    assert Config(issuers={"a": issuer}, routes=[{**route, "policies": [{"type": "jwt"}]}])


@pytest.mark.e2e
async def test_relaygate_ingress_checks_jwts_from_its_config_file(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """The same policy in `relaygate ingress` as a user runs it, with an echo worker."""
    async with identity_provider() as idp:
        idp.keys = [public_jwk(rsa_key("idp"), "k1")]
        config = {**_config(idp), "bus": {"url": nats_server.url, "prefix": "auth-e2e"}}
        config["routes"] = [_route("orders", topic="echo", scopes=["orders:read"])]
        config_file = write_config(tmp_path / "auth.yaml", config)
        worker = RelaygateRole(tmp_path, "worker", config_file, ["worker", "echo"])
        node = IngressNode(tmp_path, "ingress", config_file)
        processes: list[RelaygateRole] = [worker, node]
        try:
            for process in processes:
                process.start()
            await asyncio.to_thread(lambda: [p.wait_ready() for p in processes])
            async with aiohttp.ClientSession() as session:
                token = sign(claims(sub="zoe"), rsa_key("idp"))
                headers = {"Authorization": f"Bearer {token}"}
                async with session.get(f"{node.url}/orders", headers=headers) as response:
                    assert response.status == 200
                    assert (await response.json())["principal"] == "zoe"
                async with session.get(f"{node.url}/orders") as response:
                    assert response.status == 401
                    assert response.headers["WWW-Authenticate"] == 'Bearer realm="relaygate"'
            assert idp.hits["jwks"] == 1
        finally:
            stop_all(processes)
