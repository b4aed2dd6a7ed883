"""A corpus of forged, tampered and malformed JWTs against the real ingress: none is
accepted, every one gets the same 401 shape, and the server that `jku`/`x5u` point
at never hears from the gateway. Valid tokens are the positive controls."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import padding

from ingress.auth import problems
from tests.ingress.auth.idp import (
    AUDIENCE,
    ISSUER,
    Gateway,
    IdentityProvider,
    b64,
    claims,
    ec_key,
    idp_and_gateway,
    public_jwk,
    public_pem,
    raw_token,
    rsa_key,
    sign,
)
from tests.support.processes import NatsServer

pytestmark = pytest.mark.nats

OTHER_ISSUER = "https://other-tenant.test/"


def _config(idp: IdentityProvider) -> dict[str, Any]:
    return {
        "issuers": {
            "idp": {
                "issuer": ISSUER,
                "audience": [AUDIENCE],
                "algorithms": ["RS256"],
                "jwks_url": f"{idp.url}/jwks",
                "typ": ["at+jwt"],
                "leeway_s": 5,
                "required_claims": ["iat"],
                "claims": {"tenant": "tid"},
            },
            "other": {
                "issuer": OTHER_ISSUER,
                "audience": [AUDIENCE],
                "algorithms": ["RS256"],
                "keys": [{"kid": "o1", "pem": public_pem(rsa_key("other")).decode()}],
                "tenant": "other",
            },
        },
        "routes": [
            {
                "name": "orders",
                "when": {"path": "/orders"},
                "to": {"type": "worker", "topic": "echo"},
                "policies": [{"type": "jwt", "max_token_bytes": 4096}],
            }
        ],
    }


@pytest.fixture
async def setup(nats_server: NatsServer) -> AsyncIterator[tuple[IdentityProvider, Gateway]]:
    async with idp_and_gateway(nats_server.url, _config) as started:
        yield started


def _hs(alg: str, secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    unsigned = raw_token(header, payload).rsplit(".", 1)[0]
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return f"{unsigned}.{b64(hmac.new(secret, unsigned.encode(), digest).digest())}"


def _pss(payload: dict[str, Any]) -> str:
    """PS256 with the issuer's own private key: right key, algorithm not allowed."""
    header = {"alg": "PS256", "typ": "at+jwt", "kid": "k1"}
    unsigned = raw_token(header, payload).rsplit(".", 1)[0]
    from cryptography.hazmat.primitives import hashes

    signature = rsa_key("idp").sign(
        unsigned.encode(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    return f"{unsigned}.{b64(signature)}"


def _tamper(token: str, **changes: Any) -> str:
    """Keep the header and the signature, swap in other claims."""
    header, _, signature = token.split(".")
    body = raw_token({}, claims(**changes)).split(".")[1]
    return f"{header}.{body}.{signature}"


def corpus(idp: IdentityProvider) -> dict[str, str]:
    """name -> token. Each must be refused."""
    key = rsa_key("idp")
    pem = public_pem(key)
    attacker = rsa_key("attacker")
    attacker_ec = ec_key("attacker")
    now = int(time.time())
    good = sign(claims(), key)
    signature = good.rsplit(".", 1)[1]
    typ = {"typ": "at+jwt", "kid": "k1"}
    watched = f"{idp.url}/watched"
    tokens: dict[str, str] = {}
    for spelling in ("none", "None", "NONE", "nOnE"):
        tokens[f"alg {spelling}"] = raw_token({"alg": spelling, **typ}, claims())
    tokens["alg none with a real signature"] = (
        raw_token({"alg": "none", **typ}, claims()).rsplit(".", 1)[0] + "." + signature
    )
    tokens["alg missing"] = raw_token(typ, claims(), b"x" * 256)
    tokens["alg lower-case rs256"] = raw_token({"alg": "rs256", **typ}, claims(), b"x" * 256)
    tokens["alg with a trailing space"] = raw_token({"alg": "RS256 ", **typ}, claims(), b"x")
    tokens["empty signature"] = good.rsplit(".", 1)[0] + "."
    tokens["signature of another token"] = _tamper(good, sub="admin", roles=["admin"])
    tokens["claims tampered, scope escalated"] = _tamper(good, scope="orders:admin")
    for alg in ("HS256", "HS384", "HS512"):
        tokens[f"{alg} keyed with the RSA public key PEM"] = _hs(
            alg, pem, {"alg": alg, **typ}, claims()
        )
    tokens["HS256 keyed with the JWK modulus"] = _hs(
        "HS256", public_jwk(key, "k1")["n"].encode(), {"alg": "HS256", **typ}, claims()
    )
    tokens["PS256 with the right key (not allowed)"] = _pss(claims())
    tokens["RS512 with the right key (not allowed)"] = sign(claims(), key, alg="RS512")
    tokens["ES256 with an attacker key, kid k1"] = sign(claims(), attacker_ec, alg="ES256")
    tokens["RS256 with an attacker key, kid k1"] = sign(claims(), attacker)
    tokens["RS256 with an attacker key, no kid"] = sign(claims(), attacker, kid=None)
    for name, kid in {
        "kid path traversal": "../../../../../../etc/passwd",
        "kid path to /dev/null": "/dev/null",
        "kid SQL injection": "' OR '1'='1",
        "kid SQL comment": "k1' -- ",
        "kid with a NUL byte": "k1\x00",
        "kid URL": f"{watched}/kid",
    }.items():
        tokens[name] = sign(claims(), attacker, kid=kid)
    tokens["kid not a string"] = raw_token({"alg": "RS256", "typ": "at+jwt", "kid": 1}, claims())
    tokens["jku at a server the attacker runs"] = sign(
        claims(), attacker, kid="evil", headers={"jku": f"{watched}/jwks.json"}
    )
    tokens["jku with kid k1"] = sign(claims(), attacker, headers={"jku": f"{watched}/jwks"})
    tokens["x5u at a server the attacker runs"] = sign(
        claims(), attacker, kid="evil", headers={"x5u": f"{watched}/cert.pem"}
    )
    tokens["embedded jwk"] = sign(
        claims(), attacker, kid="evil", headers={"jwk": public_jwk(attacker, "evil")}
    )
    tokens["embedded jwk with kid k1"] = sign(
        claims(), attacker, headers={"jwk": public_jwk(attacker, "k1")}
    )
    tokens["expired an hour ago"] = sign(claims(exp=now - 3600, iat=now - 7200, nbf=None), key)
    tokens["expired beyond the leeway"] = sign(claims(exp=now - 10), key)
    tokens["nbf in the future"] = sign(claims(nbf=now + 3600), key)
    tokens["iat in the future"] = sign(claims(iat=now + 3600, nbf=None), key)
    tokens["exp missing"] = sign(claims(exp=None), key)
    tokens["required iat missing"] = sign(claims(iat=None), key)
    tokens["exp not a number"] = sign(claims(exp="tomorrow"), key)
    tokens["wrong aud"] = sign(claims(aud="billing-api"), key)
    tokens["aud list without ours"] = sign(claims(aud=["billing-api", "x"]), key)
    tokens["aud missing"] = sign(claims(aud=None), key)
    tokens["unknown iss"] = sign(claims(iss="https://evil.test/"), key)
    tokens["iss missing"] = sign(claims(iss=None), key)
    tokens["other tenant's iss, this issuer's key"] = sign(claims(iss=OTHER_ISSUER), key)
    tokens["this issuer's iss, other tenant's key"] = sign(claims(), rsa_key("other"), kid="o1")
    tokens["typ JWT where at+jwt is required"] = sign(claims(), key, headers={"typ": "JWT"})
    tokens["typ missing"] = raw_token({"alg": "RS256", "kid": "k1"}, claims(), b"x")
    tokens["unknown crit"] = sign(
        claims(), key, headers={"crit": ["exp-policy"], "exp-policy": "strict"}
    )
    tokens["empty crit"] = sign(claims(), key, headers={"crit": []})
    tokens["subject missing"] = sign(claims(sub=None), key)
    tokens["oversized"] = sign(claims(padding="x" * 5000), key)
    tokens["bad base64 header"] = "!!!." + good.split(".", 1)[1]
    tokens["bad base64 signature"] = good.rsplit(".", 1)[0] + ".@@@@"
    tokens["two segments"] = ".".join(good.split(".")[:2])
    tokens["four segments"] = good + "." + signature
    tokens["five segments (JWE shape)"] = "a.b.c.d.e"
    tokens["header not JSON"] = b64(b"{alg: RS256") + "." + good.split(".", 1)[1]
    tokens["header a JSON list"] = b64(b'["RS256"]') + "." + good.split(".", 1)[1]
    tokens["payload not JSON"] = good.split(".")[0] + "." + b64(b"sub=admin") + "." + signature
    tokens["garbage"] = "not-a-jwt"
    return tokens


async def _get(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any, str]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        body = await response.json(content_type=None)
        return response.status, body, response.headers.get("WWW-Authenticate", "")


async def test_no_forged_token_is_accepted_and_all_get_the_same_401(
    setup: tuple[IdentityProvider, Gateway],
) -> None:
    idp, gw = setup
    tokens = corpus(idp)
    assert len(tokens) >= 40
    url = f"{gw.url}/orders"
    async with aiohttp.ClientSession() as session:
        # Positive controls, before and after the attacks.
        status, body, _ = await _get(session, url, sign(claims(), rsa_key("idp")))
        assert (status, body["principal"]) == (200, "alice")
        shapes: dict[tuple[Any, ...], list[str]] = {}
        for name, token in tokens.items():
            status, body, challenge = await _get(session, url, token)
            assert status == 401, f"{name}: accepted with {status} {body}"
            description = body.pop("detail")
            assert description in (problems.INVALID, problems.EXPIRED), name
            assert challenge == (
                f'Bearer realm="relaygate", error="invalid_token", '
                f'error_description="{description}"'
            ), name
            assert body.pop("instance") == "/orders"
            body.pop("correlation_id")
            shapes.setdefault(tuple(sorted(body.items())), []).append(name)
        other = sign(claims(iss=OTHER_ISSUER, sub="olga"), rsa_key("other"), kid="o1")
        status, body, _ = await _get(session, url, other)
        assert (status, body["principal"]) == (200, "olga")
    assert len(shapes) == 1, f"401 bodies differ: {list(shapes.values())}"
    expired = {n for n, t in tokens.items() if "expired" in n}
    assert expired  # they alone may say so, and only because their signature verified
    assert idp.hits["watched"] == 0
    # The corpus names unknown kids: at most one refetch of the issuer's own key set.
    assert idp.hits["jwks"] <= 2
