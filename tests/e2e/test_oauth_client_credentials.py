"""The gateway's own OAuth 2.0 authorization server on `relaygate up`: a third-party
client gets a token with client credentials and calls a protected route; RFC 6749 errors;
introspection, revocation, metadata and JWKS documents; and signing-key rotation that
keeps tokens signed by the previous key valid."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.support.gateway import RelaygateUp, running_up

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

CONFIG: dict[str, Any] = {
    "auth_server": {"scopes": ["orders:read", "orders:write"], "token_ttl_s": 600},
    "tiers": {"partner": {"limits": [{"requests": 1000, "window_s": 60}]}},
    "routes": [
        {
            "name": "orders",
            "when": {"path": "/orders/{rest:path}"},
            "to": {"type": "worker", "topic": "echo"},
            "policies": [{"type": "oauth", "scopes": ["orders:read"]}],
        },
        {
            "name": "writes",
            "when": {"path": "/writes/{rest:path}"},
            "to": {"type": "worker", "topic": "echo"},
            "policies": [{"type": "oauth", "scopes": ["orders:write"]}],
        },
    ],
    "workers": [{"type": "echo", "topics": ["echo"]}],
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelaygateUp]:
    workdir = tmp_path_factory.mktemp("oauth")
    env = {"XDG_DATA_HOME": str(workdir / "data")}
    with running_up(workdir, "oauth", CONFIG, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def client(gateway: RelaygateUp) -> tuple[str, str]:
    """A registered third-party application: (client_id, client_secret)."""
    created = httpx.post(
        f"{gateway.admin_url}/admin/oauth/clients",
        json={
            "name": "Partner app",
            "subject": "partner-app",
            "scopes": ["orders:read"],
            "tier": "partner",
            "tenant": "acme",
        },
        timeout=10.0,
    )
    assert created.status_code == 201, created.text
    return created.json()["client_id"], created.json()["client_secret"]


def token(http: httpx.Client, client: tuple[str, str], **form: str) -> str:
    answer = http.post(
        "/oauth/token", data={"grant_type": "client_credentials", **form}, auth=client
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    access: str = body["access_token"]
    return access


def verified(http: httpx.Client, access: str) -> dict[str, Any]:
    """The token checked as any third party would: against the published JWKS."""
    meta = http.get("/.well-known/oauth-authorization-server").json()
    jwks = http.get(meta["jwks_uri"].removeprefix(meta["issuer"])).json()
    kid = jwt.get_unverified_header(access)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(
        access,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience=meta["issuer"],
        issuer=meta["issuer"],
    )
    return claims


def test_client_gets_a_token_and_calls_a_protected_route(
    gateway: RelaygateUp, client: tuple[str, str]
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10.0) as http:
        access = token(http, client)
        claims = verified(http, access)
        assert claims["iss"] == gateway.url
        assert claims["sub"] == "partner-app"
        assert claims["client_id"] == client[0]
        assert claims["scope"] == "orders:read"
        assert claims["exp"] - claims["iat"] == 600
        assert len(claims["jti"]) >= 16

        called = http.get("/orders/42", headers={"authorization": f"Bearer {access}"})
        assert called.status_code == 200, called.text
        assert called.json()["principal"] == "partner-app"

        # client_secret_post works the same
        posted = http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client[0],
                "client_secret": client[1],
                "scope": "orders:read",
            },
        )
        assert posted.status_code == 200, posted.text
        assert posted.json()["scope"] == "orders:read"

        missing = http.get("/orders/42")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        forged = http.get("/orders/42", headers={"authorization": f"Bearer {access[:-4]}AAAA"})
        assert forged.status_code == 401
        assert 'error="invalid_token"' in forged.headers["www-authenticate"]
        no_scope = http.get("/writes/1", headers={"authorization": f"Bearer {access}"})
        assert no_scope.status_code == 403
        assert 'error="insufficient_scope"' in no_scope.headers["www-authenticate"]


def test_token_endpoint_answers_rfc6749_errors(
    gateway: RelaygateUp, client: tuple[str, str]
) -> None:
    grant = {"grant_type": "client_credentials"}
    with httpx.Client(base_url=gateway.url, timeout=10.0) as http:
        wrong = http.post("/oauth/token", data=grant, auth=(client[0], "not-the-secret"))
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "invalid_client"
        assert wrong.headers["www-authenticate"].startswith("Basic")
        assert http.post("/oauth/token", data=grant).json()["error"] == "invalid_client"

        def error(**form: str) -> tuple[int, str]:
            answer = http.post("/oauth/token", data=form, auth=client)
            return answer.status_code, answer.json()["error"]

        assert error(grant_type="password") == (400, "unsupported_grant_type")
        assert error() == (400, "invalid_request")
        assert error(grant_type="client_credentials", scope="orders:write") == (
            400,
            "invalid_scope",
        )
        both = http.post("/oauth/token", data={**grant, "client_secret": client[1]}, auth=client)
        assert both.json()["error"] == "invalid_request"
        as_json = http.post("/oauth/token", json=grant, auth=client)
        assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
        assert http.get("/oauth/token").status_code == 405


def test_revoked_token_is_refused_and_introspects_inactive(
    gateway: RelaygateUp, client: tuple[str, str]
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10.0) as http:
        access = token(http, client)
        bearer = {"authorization": f"Bearer {access}"}
        assert http.get("/orders/1", headers=bearer).status_code == 200

        assert http.post("/oauth/introspect", data={"token": access}).status_code == 401
        active = http.post("/oauth/introspect", data={"token": access}, auth=client).json()
        assert active["active"] is True
        assert (active["client_id"], active["sub"], active["scope"]) == (
            client[0],
            "partner-app",
            "orders:read",
        )
        garbage = http.post("/oauth/introspect", data={"token": "x.y.z"}, auth=client).json()
        assert garbage == {"active": False}

        revoked = http.post("/oauth/revoke", data={"token": access}, auth=client)
        assert revoked.status_code == 200, revoked.text
        # Revocation is written through this node's cache: refused at once.
        refused = http.get("/orders/1", headers=bearer)
        assert refused.status_code == 401, refused.text
        inactive = http.post("/oauth/introspect", data={"token": access}, auth=client).json()
        assert inactive == {"active": False}
        # Revoking again, or an unknown token, is still a 200 (RFC 7009 §2.2).
        assert http.post("/oauth/revoke", data={"token": access}, auth=client).status_code == 200
        assert http.post("/oauth/revoke", data={"token": "nope"}, auth=client).status_code == 200


def test_metadata_and_jwks_documents(gateway: RelaygateUp) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10.0) as http:
        meta = http.get("/.well-known/oauth-authorization-server")
        assert meta.status_code == 200
        document = meta.json()
        issuer = gateway.url
        assert document["issuer"] == issuer
        assert document["token_endpoint"] == f"{issuer}/oauth/token"
        assert document["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
        assert document["revocation_endpoint"] == f"{issuer}/oauth/revoke"
        assert document["introspection_endpoint"] == f"{issuer}/oauth/introspect"
        assert document["grant_types_supported"] == ["client_credentials"]
        assert document["token_endpoint_auth_methods_supported"] == [
            "client_secret_basic",
            "client_secret_post",
        ]
        assert document["scopes_supported"] == ["orders:read", "orders:write"]
        keys = http.get("/.well-known/jwks.json").json()["keys"]
        assert keys
        for key in keys:
            assert key["kty"] == "RSA"
            assert key["alg"] == "RS256"
            assert key["use"] == "sig"
            assert "d" not in key  # public halves only


def test_signing_key_rotation_keeps_old_tokens_valid(
    gateway: RelaygateUp, client: tuple[str, str]
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10.0) as http:
        old = token(http, client)
        old_kid = jwt.get_unverified_header(old)["kid"]
        rotated = httpx.post(f"{gateway.admin_url}/admin/oauth/keys/rotate", timeout=30.0)
        assert rotated.status_code == 200, rotated.text
        new_kid = rotated.json()["kid"]
        assert new_kid != old_kid
        assert old_kid in rotated.json()["retired"]

        published = {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
        assert {old_kid, new_kid} <= published
        new = token(http, client)
        assert jwt.get_unverified_header(new)["kid"] == new_kid
        for access in (old, new):
            assert verified(http, access)["sub"] == "partner-app"
            called = http.get("/orders/7", headers={"authorization": f"Bearer {access}"})
            assert called.status_code == 200, called.text


def test_revoked_client_gets_no_tokens_and_its_tokens_are_refused(
    gateway: RelaygateUp,
) -> None:
    admin = f"{gateway.admin_url}/admin/oauth/clients"
    created = httpx.post(admin, json={"scopes": ["orders:read"]}, timeout=10.0).json()
    other = (created["client_id"], created["client_secret"])
    not_allowed = httpx.post(admin, json={"scopes": ["admin:all"]}, timeout=10.0)
    assert not_allowed.status_code == 422
    with httpx.Client(base_url=gateway.url, timeout=10.0) as http:
        access = token(http, other)
        called = http.get("/orders/1", headers={"authorization": f"Bearer {access}"})
        assert called.json()["principal"] == other[0]  # no subject: the client id
        assert httpx.delete(f"{admin}/{other[0]}", timeout=10.0).status_code == 200
        assert (
            http.get("/orders/1", headers={"authorization": f"Bearer {access}"}).status_code == 401
        )
        again = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=other)
        assert again.status_code == 401
