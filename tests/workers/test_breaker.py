"""The circuit breaker, the sliding window under it and the retry budget, on a fake clock."""

from __future__ import annotations

from contracts.config import CircuitBreakerOptions, RetryPolicy
from workers.routing.breaker import CircuitBreaker
from workers.routing.failover import RetryBudget
from workers.routing.window import SlidingCounts


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock, **options: float) -> CircuitBreaker:
    defaults: dict[str, float] = {
        "window_s": 10,
        "min_calls": 4,
        "failure_rate": 0.5,
        "open_ms": 1000,
        "half_open_calls": 2,
    }
    return CircuitBreaker(CircuitBreakerOptions(**{**defaults, **options}), clock)


def state(b: CircuitBreaker) -> str:
    return b.state


def run(b: CircuitBreaker, *outcomes: bool) -> None:
    for failed in outcomes:
        assert b.allow()
        b.record(failed)


def test_sliding_counts_forget_calls_older_than_the_window() -> None:
    clock = FakeClock()
    counts = SlidingCounts(10, clock)
    counts.add(failed=True)
    clock.now += 5
    counts.add()
    assert (counts.calls(), counts.failures()) == (2, 1)
    clock.now += 6  # the first call is 11 s old
    assert (counts.calls(), counts.failures()) == (1, 0)
    clock.now += 100
    assert counts.calls() == 0


def test_breaker_stays_closed_below_the_minimum_call_count() -> None:
    b = breaker(FakeClock())
    run(b, True, True, True)
    assert state(b) == "closed"


def test_breaker_stays_closed_below_the_failure_rate() -> None:
    b = breaker(FakeClock())
    run(b, False, False, False, True, False, True)  # 2 of 6 failed
    assert state(b) == "closed"


def test_breaker_opens_at_the_failure_rate_and_refuses_calls_while_open() -> None:
    clock = FakeClock()
    b = breaker(clock)
    run(b, False, False, True, True)  # 2 of 4
    assert state(b) == "open"
    assert not b.allow()
    clock.now += 0.4
    assert b.retry_after_s() == 1
    assert not b.allow()


def test_old_failures_leave_the_window() -> None:
    clock = FakeClock()
    b = breaker(clock)
    run(b, True, True, True)
    clock.now += 11
    run(b, False, False, False, True)  # 1 of 4 within the window
    assert state(b) == "closed"


def test_half_open_lets_a_limited_number_of_trials_through_and_closes_on_success() -> None:
    clock = FakeClock()
    b = breaker(clock)
    run(b, True, True, True, True)
    clock.now += 1.0
    assert b.allow()
    assert state(b) == "half_open"
    assert b.allow()
    assert not b.allow()  # only two trials at once
    b.record(False)
    assert state(b) == "half_open"
    b.record(False)
    assert state(b) == "closed"
    assert b.snapshot()["calls"] == 0  # a fresh window after closing


def test_a_failed_trial_opens_the_breaker_again() -> None:
    clock = FakeClock()
    b = breaker(clock)
    run(b, True, True, True, True)
    clock.now += 1.0
    run(b, True)
    assert state(b) == "open"
    assert b.snapshot()["opened"] == 2
    assert not b.allow()


def test_retry_budget_allows_the_minimum_then_a_share_of_recent_requests() -> None:
    clock = FakeClock()
    budget = RetryBudget(RetryPolicy(attempts=2, budget_ratio=0.1, min_retries=1), clock)
    budget.request()
    assert budget.try_retry()
    assert not budget.try_retry()
    for _ in range(29):
        budget.request()
    assert budget.try_retry()  # 30 requests: 3 retries
    assert budget.try_retry()
    assert not budget.try_retry()
    clock.now += 11  # everything left the window
    assert budget.try_retry()
