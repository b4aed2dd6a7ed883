"""The credential settings of the config: policies, the admin token, auth_server."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.config import ConfigError, load_config
from tests.support.gateway import write_config

ROUTE = {"name": "r", "when": {"path": "/r"}, "to": {"type": "worker", "topic": "r"}}


def test_oauth_policy_without_auth_server_is_an_error_with_its_path(tmp_path: Path) -> None:
    file = write_config(
        tmp_path / "c.yaml", {"routes": [{**ROUTE, "policies": [{"type": "oauth"}]}]}
    )
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    assert any(
        p.startswith("routes[0].policies[0].type: an oauth policy needs the auth_server")
        for p in caught.value.problems
    ), caught.value.problems


def test_credential_settings_load_and_the_admin_token_is_redacted(tmp_path: Path) -> None:
    file = write_config(
        tmp_path / "c.yaml",
        {
            "admin": {"token": "a-long-enough-admin-token"},
            "state": {"dir": str(tmp_path), "credentials_ttl_ms": 200},
            "auth_server": {},
            "routes": [
                {**ROUTE, "policies": [{"type": "api_key", "header": "X-Key"}, {"type": "oauth"}]}
            ],
        },
    )
    config = load_config(file)
    assert config.auth_server is not None
    assert config.auth_server.algorithm == "RS256"
    assert config.redacted()["admin"]["token"] == "***"


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"admin": {"token": "short"}}, "admin.token"),
        ({"state": {"credentials_ttl_ms": 5000}}, "state.credentials_ttl_ms"),
        ({"auth_server": {"issuer": "ftp://x"}}, "auth_server.issuer"),
        (
            {"routes": [{**ROUTE, "policies": [{"type": "api_key", "header": "X Key"}]}]},
            "routes[0].policies[0].header",
        ),
    ],
)
def test_bad_credential_settings_name_their_path(
    tmp_path: Path, data: dict[str, object], where: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "c.yaml", data))
    assert any(p.startswith(f"{where}:") for p in caught.value.problems), caught.value.problems


def test_nodes_sharing_state_must_name_the_issuer(tmp_path: Path) -> None:
    data = {"state": {"url": "redis://127.0.0.1:6379/0"}, "auth_server": {}}
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "c.yaml", data))
    assert any(p.startswith("auth_server.issuer:") for p in caught.value.problems)
    data["auth_server"] = {"issuer": "https://api.example.com"}
    assert load_config(write_config(tmp_path / "c.yaml", data)).auth_server is not None
