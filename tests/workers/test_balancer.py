"""Choosing an instance: failover groups, round robin, least outstanding, consistent hash."""

from __future__ import annotations

from collections import Counter

from workers.routing.balancer import ConsistentHash, LeastOutstanding, RoundRobin
from workers.routing.failover import candidates
from workers.routing.health import Instance

NOW = 100.0


def instances(*groups: int) -> list[Instance]:
    return [Instance(f"http://10.0.0.{n}:80", group) for n, group in enumerate(groups)]


def test_the_lowest_group_with_an_available_instance_is_chosen() -> None:
    a, b, c = instances(0, 1, 1)
    assert candidates([a, b, c], NOW) == [a]
    a.healthy = False
    assert candidates([a, b, c], NOW) == [b, c]
    b.ejected_until = NOW + 1
    assert candidates([a, b, c], NOW) == [c]
    c.healthy = False
    assert candidates([a, b, c], NOW) == []
    assert candidates([a, b, c], NOW + 1) == [b]  # the ejection is over


def test_instances_already_tried_are_avoided_when_others_are_available() -> None:
    a, b, c = instances(0, 0, 1)
    assert candidates([a, b, c], NOW, tried=[a]) == [b]
    assert candidates([a, b, c], NOW, tried=[a, b]) == [c]
    assert candidates([a, b, c], NOW, tried=[a, b, c]) == [a, b]


def test_round_robin_takes_turns() -> None:
    group = instances(0, 0, 0)
    balancer = RoundRobin()
    picks = [balancer.pick(group, "") for _ in range(6)]
    assert picks == group + group


def test_least_outstanding_picks_the_least_busy_and_shares_ties() -> None:
    a, b, c = instances(0, 0, 0)
    a.outstanding, b.outstanding, c.outstanding = 3, 1, 1
    balancer = LeastOutstanding()
    picks = Counter(balancer.pick([a, b, c], "").url for _ in range(6))
    assert picks == {b.url: 3, c.url: 3}


def test_consistent_hash_moves_only_the_keys_of_a_removed_instance() -> None:
    group = instances(0, 0, 0, 0)
    balancer = ConsistentHash(group)
    keys = [f"user-{n}" for n in range(400)]
    before = {key: balancer.pick(group, key) for key in keys}
    assert all(count > 50 for count in Counter(before.values()).values())  # spread out
    gone = group[1]
    rest = [i for i in group if i is not gone]
    after = {key: balancer.pick(rest, key) for key in keys}
    moved = [key for key in keys if after[key] is not before[key]]
    assert moved == [key for key in keys if before[key] is gone]
