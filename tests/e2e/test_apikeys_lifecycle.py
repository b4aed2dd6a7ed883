"""API keys through the admin API of `relaygate up` on its embedded default (a SQLite
file under the data dir): issue, use, scope to routes, survive a restart, rotate with a
grace period, revoke; the admin token guarding it all; and the authorization server's
signing keys, kept across the restart too."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import running_up

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def _route(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "when": {"path": f"/{name}/{{rest:path}}"},
        "to": {"type": "worker", "topic": "echo"},
        "policies": [{"type": "api_key"}],
    }


CONFIG: dict[str, Any] = {
    "admin": {"token": ADMIN_TOKEN},
    # A fixed issuer: the default names the ingress port, a new free one on each start.
    "auth_server": {"issuer": "https://api.example.test"},
    "tiers": {"partner": {"limits": [{"requests": 1000, "window_s": 60}]}},
    "routes": [_route("orders"), _route("billing")],
    "workers": [{"type": "echo", "topics": ["echo"]}],
}


def test_api_key_lifecycle_and_signing_keys_across_a_restart_of_relaygate_up(
    tmp_path: Path,
) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}  # the default data dir, kept apart
    with (
        running_up(tmp_path, "first", CONFIG, env=env) as gateway,
        httpx.Client(base_url=gateway.admin_url, timeout=10.0) as admin,
        httpx.Client(base_url=gateway.url, timeout=10.0) as data,
    ):
        assert admin.post("/admin/keys", json={"subject": "x"}).status_code == 401
        assert (
            admin.get("/admin/keys", headers={"authorization": "Bearer wrong"}).status_code == 401
        )
        assert admin.get("/stats").status_code == 401  # the whole admin API is guarded
        assert admin.get("/readyz").status_code == 200  # probes need no token

        created = admin.post(
            "/admin/keys",
            headers=ADMIN,
            json={
                "subject": "acme-app",
                "tenant": "acme",
                "tier": "partner",
                "routes": ["orders"],
                "metadata": {"owner": "team-a"},
            },
        )
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        refused = admin.post("/admin/keys", headers=ADMIN, json={"tier": "gold"})
        assert refused.status_code == 422
        assert "unknown tier" in refused.text

        listed = admin.get("/admin/keys", headers=ADMIN)
        assert [k["id"] for k in listed.json()["keys"]] == [key_id]
        assert key.split("_", 2)[2] not in listed.text  # the secret is never shown again
        assert listed.json()["keys"][0]["metadata"] == {"owner": "team-a"}
        config = admin.get("/config", headers=ADMIN).json()
        assert config["admin"]["token"] == "***"

        client = admin.post("/admin/oauth/clients", headers=ADMIN, json={"subject": "app"}).json()
        issued = data.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client["client_id"], client["client_secret"]),
        )
        assert issued.status_code == 200, issued.text
        access = issued.json()["access_token"]
        jwks = data.get("/.well-known/jwks.json").json()

        ok = data.get("/orders/1", headers={"x-api-key": key})
        assert ok.status_code == 200, ok.text
        assert ok.json()["principal"] == "acme-app"
        assert data.get("/orders/1", headers={"authorization": f"ApiKey {key}"}).is_success

        missing = data.get("/orders/1")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
        assert data.get("/orders/1", headers={"x-api-key": key[:-2]}).status_code == 401
        elsewhere = data.get("/billing/1", headers={"x-api-key": key})
        assert elsewhere.status_code == 403, elsewhere.text

    assert (tmp_path / "data" / "relaygate" / "credentials.db").exists()

    with (
        running_up(tmp_path, "second", CONFIG, env=env) as gateway,
        httpx.Client(base_url=gateway.admin_url, timeout=10.0, headers=ADMIN) as admin,
        httpx.Client(base_url=gateway.url, timeout=10.0) as data,
    ):
        kept = data.get("/orders/2", headers={"x-api-key": key})
        assert kept.status_code == 200, kept.text  # the key survived the restart
        assert data.get("/.well-known/jwks.json").json() == jwks  # so did the signing key
        introspected = data.post(
            "/oauth/introspect",
            data={"token": access},
            auth=(client["client_id"], client["client_secret"]),
        )
        assert introspected.json()["active"] is True

        widened = admin.patch(f"/admin/keys/{key_id}", json={"routes": ["orders", "billing"]})
        assert widened.status_code == 200, widened.text
        assert data.get("/billing/1", headers={"x-api-key": key}).status_code == 200

        rotated = admin.post(f"/admin/keys/{key_id}/rotate", json={"grace_s": 1.5})
        assert rotated.status_code == 200, rotated.text
        new_key = rotated.json()["key"]
        assert new_key != key
        assert new_key.startswith(f"rgk_{key_id}_")
        assert data.get("/orders/3", headers={"x-api-key": new_key}).status_code == 200
        assert data.get("/orders/3", headers={"x-api-key": key}).status_code == 200  # grace
        time.sleep(1.6)
        assert data.get("/orders/4", headers={"x-api-key": key}).status_code == 401
        assert data.get("/orders/4", headers={"x-api-key": new_key}).status_code == 200

        revoked = admin.delete(f"/admin/keys/{key_id}")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_ms"] is not None
        assert data.get("/orders/5", headers={"x-api-key": new_key}).status_code == 401
        assert admin.post(f"/admin/keys/{key_id}/rotate").status_code == 409
        assert admin.delete("/admin/keys/0123456789abcdef").status_code == 404
