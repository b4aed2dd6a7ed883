"""Many concurrent requests through two ingress nodes and two echo worker replicas,
each started on its own (`relaygate ingress`, `relaygate worker echo`): every
response belongs to its own request, and no reply is left pending."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import Cluster
from tests.support.gateway import admin_stats
from tests.support.marked_load import run_load

pytestmark = pytest.mark.e2e

CONNECTIONS_PER_NODE = 64


@pytest.mark.parametrize(
    ("cluster", "count"),
    [
        pytest.param(("nats", 5_000), 2_000, marks=pytest.mark.nats, id="nats-2000"),
        pytest.param(("kafka", 10_000), 500, marks=pytest.mark.kafka, id="kafka-500"),
    ],
    indirect=["cluster"],
)
async def test_concurrent_requests_each_get_their_own_reply(cluster: Cluster, count: int) -> None:
    started = time.monotonic()
    outcomes = await run_load([n.url for n in cluster.ingresses], count, CONNECTIONS_PER_NODE)
    seconds = time.monotonic() - started

    failed = [o for o in outcomes if o.problem is not None]
    assert not failed, f"{len(failed)} of {count} wrong, e.g. {failed[:3]}"
    assert len({o.marker for o in outcomes}) == count
    for node in cluster.ingresses:
        stats = admin_stats(node.admin_url)
        assert stats["pending"] == 0, stats
        assert stats["replies"] >= count // 2, stats
    print(f"{count} requests on {cluster.bus} in {seconds:.1f}s ({count / seconds:.0f}/s)")
