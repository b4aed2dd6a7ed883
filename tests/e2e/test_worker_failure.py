"""A worker replica killed (SIGKILL) under load: no request that gets a 2xx gets
someone else's reply, the rest fail fast and cleanly (503/504 problem details,
never past the route's deadline), and nothing is left pending."""

from __future__ import annotations

import collections
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Cluster
from tests.support.gateway import admin_stats
from tests.support.marked_load import Outcome, run_load

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

TIMEOUT_MS = 2_000
REQUESTS = 1_000
KILL_AFTER = 300
IN_FLIGHT_PER_NODE = 25


@pytest.mark.parametrize("cluster", [("nats", TIMEOUT_MS)], indirect=True, ids=["nats"])
async def test_killing_a_worker_replica_under_load_loses_no_answered_request(
    cluster: Cluster, record_property: Callable[[str, object], None]
) -> None:
    victim = cluster.workers[0]
    done: list[Outcome] = []
    after_kill: list[Outcome] = []

    def on_done(outcome: Outcome) -> None:
        done.append(outcome)
        if victim.alive() and len(done) >= KILL_AFTER:
            victim.kill()  # SIGKILL: no drain, no goodbye
        elif not victim.alive():
            after_kill.append(outcome)

    ingresses = [node.url for node in cluster.ingresses]
    outcomes = await run_load(ingresses, REQUESTS, IN_FLIGHT_PER_NODE, on_done)

    failed = [o for o in outcomes if o.status // 100 != 2]
    statuses = collections.Counter(o.status for o in outcomes)
    record_property("failed_requests", len(failed))
    print(f"worker killed after {KILL_AFTER} of {REQUESTS}: statuses {dict(statuses)}")

    assert victim.proc is not None
    assert victim.proc.returncode == -9, "the worker was not killed"
    wrong = [o for o in outcomes if o.status // 100 == 2 and o.problem is not None]
    assert not wrong, f"2xx with someone else's reply: {wrong[:3]}"
    unclean = [
        o
        for o in failed
        if o.status not in (503, 504)
        or not (o.content_type or "").startswith("application/problem+json")
    ]
    assert not unclean, f"failures that are not 503/504 problem details: {unclean[:3]}"
    slowest = max(o.seconds for o in outcomes)
    assert slowest < TIMEOUT_MS / 1000 + 2.0, f"a request took {slowest:.1f}s"
    # Only requests in the dead worker's hands can be lost: at most those in flight.
    assert len(failed) <= IN_FLIGHT_PER_NODE * len(ingresses), statuses
    # The surviving replica carried on.
    assert sum(o.status == 200 for o in after_kill) >= (REQUESTS - KILL_AFTER) // 2
    for node in cluster.ingresses:
        assert admin_stats(node.admin_url)["pending"] == 0
