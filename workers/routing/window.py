"""`SlidingCounts`: calls and failures over the last `window_s` seconds, in ten buckets,
so that memory and work per call stay constant whatever the request rate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Clock = Callable[[], float]

_BUCKETS = 10


class SlidingCounts:
    """`add(failed)` per call; `calls()` and `failures()` over the window."""

    __slots__ = ("_calls", "_clock", "_current", "_failures", "_width")

    def __init__(self, window_s: float, clock: Clock = time.monotonic) -> None:
        self._width = window_s / _BUCKETS
        self._clock = clock
        self._calls = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS
        self._current = self._bucket()

    def add(self, failed: bool = False) -> None:
        index = self._advance()
        self._calls[index] += 1
        if failed:
            self._failures[index] += 1

    def calls(self) -> int:
        self._advance()
        return sum(self._calls)

    def failures(self) -> int:
        self._advance()
        return sum(self._failures)

    def clear(self) -> None:
        self._calls = [0] * _BUCKETS
        self._failures = [0] * _BUCKETS

    def _bucket(self) -> int:
        return math.floor(self._clock() / self._width)

    def _advance(self) -> int:
        """Zero the buckets that fell out of the window; the index of the current one."""
        now = self._bucket()
        stale = min(now - self._current, _BUCKETS)
        for step in range(1, stale + 1):
            index = (self._current + step) % _BUCKETS
            self._calls[index] = 0
            self._failures[index] = 0
        self._current = now
        return now % _BUCKETS
