"""API keys shared through a real Redis by two `relaygate ingress` nodes: a key issued on
one works on the other, a revocation on one is honoured by the other within a second,
and a rotation's grace period holds on both."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import IngressNode, nodes_sharing_redis
from tests.support.processes import NatsServer, RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.nats, pytest.mark.redis]


@pytest.fixture
def nodes(
    tmp_path: Path, nats_server: NatsServer, redis_server: RedisServer
) -> Iterator[list[IngressNode]]:
    policies = [{"type": "api_key"}]
    with nodes_sharing_redis(tmp_path, nats_server.url, redis_server.url, policies) as started:
        yield started


def test_revocation_on_one_node_is_honoured_by_the_other_within_a_second(
    nodes: list[IngressNode],
) -> None:
    one, two = nodes
    with (
        httpx.Client(base_url=one.admin_url, timeout=10.0) as admin_one,
        httpx.Client(base_url=two.admin_url, timeout=10.0) as admin_two,
        httpx.Client(timeout=10.0) as client,
    ):
        created = admin_one.post("/admin/keys", json={"subject": "shared-app"})
        assert created.status_code == 201, created.text
        key, key_id = created.json()["key"], created.json()["id"]
        assert [k["id"] for k in admin_two.get("/admin/keys").json()["keys"]] == [key_id]
        for node in (one, two):
            answer = client.get(f"{node.url}/orders/1", headers={"x-api-key": key})
            assert answer.status_code == 200, answer.text
            assert answer.json()["principal"] == "shared-app"

        # A rotation on node two: node one takes the new key and, for the grace, the old.
        rotated = admin_two.post(f"/admin/keys/{key_id}/rotate", json={"grace_s": 30})
        new_key = rotated.json()["key"]
        assert client.get(f"{one.url}/orders/2", headers={"x-api-key": new_key}).is_success
        assert client.get(f"{one.url}/orders/2", headers={"x-api-key": key}).is_success

        assert client.get(f"{two.url}/orders/3", headers={"x-api-key": new_key}).is_success
        assert admin_one.delete(f"/admin/keys/{key_id}").status_code == 200
        revoked_at = time.monotonic()
        while True:
            status = client.get(f"{two.url}/orders/4", headers={"x-api-key": new_key}).status_code
            waited = time.monotonic() - revoked_at
            if status == 401:
                break
            assert status == 200
            assert waited < 1.0, "node two still accepts a key revoked on node one"
            time.sleep(0.01)
        print(f"revocation seen by the other node after {waited * 1000:.0f} ms")
        assert client.get(f"{one.url}/orders/5", headers={"x-api-key": key}).status_code == 401
