"""Load balancing within a group of available instances: round robin, least outstanding
requests, or consistent hashing of a key (a header or the client address) on a ring, so
that a key keeps its instance while that instance is available.

Instances may carry weights (a target's `weight`, an SRV record's): when any weight
differs from 1, the weighted variants apply. The pool builds its balancer again whenever
its instance set changes, so the per-request path never checks for weights."""

from __future__ import annotations

import bisect
import hashlib
import itertools
from typing import Literal, Protocol

from workers.routing.health import Instance

Balance = Literal["round_robin", "least_outstanding", "consistent_hash"]

# Points per instance on the hash ring: enough for an even spread over a few instances.
_RING_POINTS = 64
_MAX_POINTS = 64 * 64  # per instance, whatever the weights


class Balancer(Protocol):
    def pick(self, candidates: list[Instance], key: str) -> Instance:
        """One of `candidates` (never empty) for a request whose hash key is `key`."""


class RoundRobin:
    __slots__ = ("_turn",)

    def __init__(self) -> None:
        self._turn = itertools.count()

    def pick(self, candidates: list[Instance], key: str) -> Instance:
        return candidates[next(self._turn) % len(candidates)]


class LeastOutstanding:
    """Fewest requests in flight; ties go round robin so that idle instances share."""

    __slots__ = ("_turn",)

    def __init__(self) -> None:
        self._turn = itertools.count()

    def pick(self, candidates: list[Instance], key: str) -> Instance:
        fewest = min(instance.outstanding for instance in candidates)
        idle = [instance for instance in candidates if instance.outstanding == fewest]
        return idle[next(self._turn) % len(idle)]


class WeightedRoundRobin:
    """Smooth weighted round robin (as nginx): each instance gets its weight's share of
    the requests, interleaved rather than in bursts."""

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: dict[Instance, int] = {}

    def pick(self, candidates: list[Instance], key: str) -> Instance:
        current = self._current
        total = 0
        best = candidates[0]
        best_score = None
        for instance in candidates:
            total += instance.weight
            score = current.get(instance, 0) + instance.weight
            current[instance] = score
            if best_score is None or score > best_score:
                best, best_score = instance, score
        current[best] -= total
        return best


class WeightedLeastOutstanding:
    """Fewest requests in flight per unit of weight; ties go round robin."""

    __slots__ = ("_turn",)

    def __init__(self) -> None:
        self._turn = itertools.count()

    def pick(self, candidates: list[Instance], key: str) -> Instance:
        fewest = min(instance.outstanding / instance.weight for instance in candidates)
        idle = [i for i in candidates if i.outstanding / i.weight == fewest]
        return idle[next(self._turn) % len(idle)]


class ConsistentHash:
    """A ring built once over every instance; a key goes to the first available one
    clockwise from its hash, so only the keys of an unavailable instance move. A heavier
    instance has proportionally more points on the ring."""

    __slots__ = ("_owners", "_points")

    def __init__(self, instances: list[Instance]) -> None:
        lightest = min((instance.weight for instance in instances), default=1)
        ring = sorted(
            (_hash(f"{instance.url}#{n}"), index)
            for index, instance in enumerate(instances)
            for n in range(min(_RING_POINTS * instance.weight // lightest, _MAX_POINTS))
        )
        self._points = [point for point, _ in ring]
        self._owners = [instances[index] for _, index in ring]

    def pick(self, candidates: list[Instance], key: str) -> Instance:
        allowed = set(candidates)
        start = bisect.bisect(self._points, _hash(key))
        size = len(self._owners)
        for step in range(size):
            owner = self._owners[(start + step) % size]
            if owner in allowed:
                return owner
        return candidates[0]  # candidates are always on the ring; kept for safety


def make_balancer(kind: Balance, instances: list[Instance]) -> Balancer:
    if kind == "consistent_hash":
        return ConsistentHash(instances)
    weighted = any(instance.weight != 1 for instance in instances)
    if kind == "least_outstanding":
        return WeightedLeastOutstanding() if weighted else LeastOutstanding()
    return WeightedRoundRobin() if weighted else RoundRobin()


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
