"""Admission's queue rules, in process and deterministic: hand-over by priority, the
reserved slots, displacement, the queue timeout, a cancelled waiter, the token bucket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts.config import AdmissionConfig, PerClientRate, Tier
from ingress.admission import Admission, ClientRates
from ingress.request import Refused

TIERS = {"bulk": Tier(), "gold": Tier(priority=5)}


def _admission(**options: Any) -> Admission:
    return Admission(AdmissionConfig(**options), TIERS, b"1")


async def _queued(admission: Admission, tier: str) -> asyncio.Task[None]:
    task = asyncio.create_task(admission.enter("c", tier))
    await asyncio.sleep(0)  # let it reach the queue
    return task


async def test_freed_slots_go_to_the_highest_priority_first_then_in_order() -> None:
    admission = _admission(max_concurrency=1, max_queue=5, queue_timeout_ms=5_000)
    await admission.enter("c", "bulk")
    order: list[str] = []

    async def wait(name: str, tier: str) -> None:
        await admission.enter("c", tier)
        order.append(name)

    tasks = []
    for name, tier in (("b1", "bulk"), ("b2", "bulk"), ("g1", "gold")):
        tasks.append(asyncio.create_task(wait(name, tier)))
        await asyncio.sleep(0)
    for _ in range(3):
        admission.leave()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["g1", "b1", "b2"]
    assert (admission.in_flight, admission.queued) == (1, 0)


async def test_reserved_slots_are_for_priority_tiers_only() -> None:
    admission = _admission(max_concurrency=2, reserved=1, max_queue=0)
    await admission.enter("c", "bulk")
    with pytest.raises(Refused) as refused:
        await admission.enter("c", "bulk")
    assert refused.value.status == 503
    await admission.enter("c", "gold")
    assert admission.in_flight == 2


async def test_full_queue_sheds_at_once_unless_a_lower_tier_can_make_room() -> None:
    admission = _admission(max_concurrency=1, max_queue=1, queue_timeout_ms=5_000)
    await admission.enter("c", "bulk")
    bulk = await _queued(admission, "bulk")
    with pytest.raises(Refused):
        await admission.enter("c", "bulk")  # same tier: no displacement
    gold = await _queued(admission, "gold")
    with pytest.raises(Refused) as displaced:
        await bulk
    assert "higher-priority" in displaced.value.detail
    admission.leave()
    await gold
    assert (admission.in_flight, admission.queued) == (1, 0)


async def test_a_waiter_is_shed_after_the_queue_timeout() -> None:
    admission = _admission(max_concurrency=1, max_queue=1, queue_timeout_ms=30)
    await admission.enter("c", "bulk")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Refused) as shed:
        await admission.enter("c", "bulk")
    assert 0.025 < loop.time() - started < 0.5
    assert shed.value.headers == [(b"retry-after", b"1")]
    assert admission.queued == 0
    admission.leave()
    assert admission.in_flight == 0


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    admission = _admission(max_concurrency=1, max_queue=2, queue_timeout_ms=5_000)
    await admission.enter("c", "bulk")
    gone = await _queued(admission, "bulk")
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert admission.queued == 0
    admission.leave()
    assert admission.in_flight == 0


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    rates = ClientRates(PerClientRate(rate=10, burst=3))
    assert [rates.take("a", 0.0) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]
    assert rates.take("b", 0.0) == 0.0  # another address has its own bucket
    assert rates.take("a", 0.1) == 0.0  # one token back after 1/rate
    assert rates.take("a", 0.1) > 0


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    rates = ClientRates(PerClientRate(rate=1, burst=2))
    assert rates.take("2001:db8:1:2::1", 0.0) == 0.0
    assert rates.take("2001:db8:1:2:ffff::9", 0.0) == 0.0
    assert rates.take("2001:db8:1:2:abcd::7", 0.0) > 0  # same /64: the bucket is empty
    assert rates.take("2001:db8:1:3::1", 0.0) == 0.0


def test_token_bucket_memory_is_bounded() -> None:
    rates = ClientRates(PerClientRate(rate=1, burst=5, max_clients=100))
    for i in range(1_000):
        rates.take(f"10.0.{i // 256}.{i % 256}", float(i) / 1000)
    assert len(rates.buckets) <= 100
