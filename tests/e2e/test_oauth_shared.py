"""The authorization server on two `relaygate ingress` nodes sharing a real Redis: a token
issued by one node is accepted by the other (one set of signing keys), and a token
revoked on one is refused by the other within a second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import IngressNode, nodes_sharing_redis
from tests.support.processes import NatsServer, RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.redis]

ISSUER = "https://api.example.test"


@pytest.fixture
def nodes(
    tmp_path: Path, nats_server: NatsServer, redis_server: RedisServer
) -> Iterator[list[IngressNode]]:
    policies = [{"type": "oauth"}]
    with nodes_sharing_redis(
        tmp_path, nats_server.url, redis_server.url, policies, auth_server={"issuer": ISSUER}
    ) as started:
        yield started


def test_token_revoked_on_one_node_is_refused_by_the_other_within_a_second(
    nodes: list[IngressNode],
) -> None:
    one, two = nodes
    with httpx.Client(timeout=10.0) as http:
        created = http.post(f"{one.admin_url}/admin/oauth/clients", json={"subject": "app"})
        assert created.status_code == 201, created.text
        client = (created.json()["client_id"], created.json()["client_secret"])
        issued = http.post(
            f"{one.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=client
        )
        assert issued.status_code == 200, issued.text
        bearer = {"authorization": f"Bearer {issued.json()['access_token']}"}
        for node in (one, two):
            answer = http.get(f"{node.url}/orders/1", headers=bearer)
            assert answer.status_code == 200, answer.text
            assert answer.json()["principal"] == "app"
        meta = http.get(f"{two.url}/.well-known/oauth-authorization-server").json()
        assert meta["token_endpoint"] == f"{ISSUER}/oauth/token"

        revoked = http.post(
            f"{one.url}/oauth/revoke", data={"token": issued.json()["access_token"]}, auth=client
        )
        assert revoked.status_code == 200, revoked.text
        revoked_at = time.monotonic()
        while (status := http.get(f"{two.url}/orders/2", headers=bearer).status_code) != 401:
            assert status == 200
            assert time.monotonic() - revoked_at < 1.0, "node two still accepts the token"
            time.sleep(0.01)
        introspected = http.post(
            f"{two.url}/oauth/introspect",
            data={"token": issued.json()["access_token"]},
            auth=client,
        )
        assert introspected.json() == {"active": False}
