"""The authorization server's tokens in process: both algorithms, and tokens it did not
sign (another issuer's keys, `alg: none`, a forged header) are refused."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from contracts.config import Config
from ingress.auth.signing import AccessTokens
from ingress.auth.store import SqliteStore

CLIENT = {"client_id": "rgc_1", "subject": "app", "tenant": "acme", "roles": ["r"], "tier": None}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path)
    yield opened
    await opened.aclose()


def tokens(store: SqliteStore, **auth_server: object) -> AccessTokens:
    config = Config(auth_server={"issuer": "https://as.example", **auth_server})
    assert config.auth_server is not None
    return AccessTokens(store, config, config.auth_server)


@pytest.mark.parametrize(("algorithm", "kty"), [("RS256", "RSA"), ("ES256", "EC")])
async def test_minted_token_verifies_against_its_jwks(
    store: SqliteStore, algorithm: str, kty: str
) -> None:
    server = tokens(store, algorithm=algorithm)
    token, claims = await server.mint(CLIENT, ["a", "b"])
    assert claims["scope"] == "a b"
    assert (claims["tenant"], claims["roles"]) == ("acme", ["r"])
    assert "tier" not in claims
    assert await server.claims(token) == claims
    (jwk,) = (await server.keys.jwks())["keys"]
    assert (jwk["kty"], jwk["alg"]) == (kty, algorithm)
    decoded = jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=[algorithm], audience="https://as.example"
    )
    assert decoded["jti"] == claims["jti"]


async def test_tokens_it_did_not_sign_are_refused(store: SqliteStore, tmp_path: Path) -> None:
    server = tokens(store)
    token, claims = await server.mint(CLIENT, [])
    other_store = SqliteStore(tmp_path / "other")
    try:
        stranger, _ = await tokens(other_store).mint(CLIENT, [])
        assert await server.claims(stranger) is None  # another server's key id
    finally:
        await other_store.aclose()
    elsewhere = tokens(store, audience="https://elsewhere.example")
    assert await elsewhere.claims(token) is None  # same keys, wrong audience

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    kid_and_typ = {"kid": header["kid"], "typ": header["typ"]}
    unsigned = jwt.encode(claims, "", algorithm="none", headers=kid_and_typ)
    assert jwt.get_unverified_header(unsigned)["typ"] == "at+jwt"
    assert await server.claims(unsigned) is None
    head, body, signature = token.split(".")
    forged_header = {**json.loads(base64.urlsafe_b64decode(head + "==")), "alg": "HS256"}
    forged_head = base64.urlsafe_b64encode(json.dumps(forged_header).encode()).rstrip(b"=")
    assert await server.claims(f"{forged_head.decode()}.{body}.{signature}") is None
    assert await server.claims("not a token") is None
