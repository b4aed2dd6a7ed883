"""`CircuitBreaker`: one per upstream. Closed, it counts outcomes over a sliding window
and opens when at least `min_calls` calls failed at `failure_rate` or more. Open, it
refuses every call for `open_ms`. Then half-open: `half_open_calls` trial calls go
through; all succeeding closes it, any failing opens it again.

    if not breaker.allow():          # a fast 503 with Retry-After: breaker.retry_after_s()
        ...
    breaker.record(failed)           # once per allowed call
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from contracts.config import CircuitBreakerOptions
from workers.routing.window import Clock, SlidingCounts

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    __slots__ = (
        "_clock",
        "_counts",
        "_min_calls",
        "_open_s",
        "_opened_at",
        "_rate",
        "_trial_limit",
        "_trial_passed",
        "_trials",
        "opened",
        "state",
    )

    def __init__(self, options: CircuitBreakerOptions, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._counts = SlidingCounts(options.window_s, clock)
        self._min_calls = options.min_calls
        self._rate = options.failure_rate
        self._open_s = options.open_ms / 1000
        self._trial_limit = options.half_open_calls
        self._opened_at = 0.0
        self._trials = 0  # trial calls let through while half-open
        self._trial_passed = 0
        self.state: State = "closed"
        self.opened = 0  # how many times it opened: shown in the admin API

    def allow(self) -> bool:
        """Whether a call may go to the upstream now; each `True` needs one `record`."""
        if self.state == "open":
            if self._clock() - self._opened_at < self._open_s:
                return False
            self.state = "half_open"
            self._trials = self._trial_passed = 0
        if self.state == "half_open":
            if self._trials >= self._trial_limit:
                return False
            self._trials += 1
        return True

    def record(self, failed: bool) -> None:
        if self.state == "half_open":
            if failed:
                self._open()
                return
            self._trial_passed += 1
            if self._trial_passed >= self._trial_limit:
                self.state = "closed"
                self._counts.clear()
            return
        if self.state == "open":
            return  # a call allowed before the breaker opened, finishing late
        self._counts.add(failed)
        if failed:
            calls = self._counts.calls()
            if calls >= self._min_calls and self._counts.failures() >= self._rate * calls:
                self._open()

    def retry_after_s(self) -> int:
        """Whole seconds until trial calls are let through (at least 1)."""
        left = self._open_s - (self._clock() - self._opened_at)
        return max(1, math.ceil(left))

    def snapshot(self) -> dict[str, Any]:
        calls = self._counts.calls()
        failures = self._counts.failures()
        return {
            "state": self.state,
            "calls": calls,
            "failures": failures,
            "failure_rate": round(failures / calls, 3) if calls else 0.0,
            "opened": self.opened,
        }

    def _open(self) -> None:
        self.state = "open"
        self._opened_at = self._clock()
        self.opened += 1
