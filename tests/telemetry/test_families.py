"""The lock-free counters and histograms expose what prometheus-client's would."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from contracts.telemetry.families import Counter, Histogram


@pytest.fixture
def name() -> str:
    return f"relaygate_test_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def made() -> Iterator[list[Collector]]:
    """Families a test makes; they leave the process registry afterwards."""
    families: list[Collector] = []
    yield families
    for family in families:
        REGISTRY.unregister(family)


def samples(name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(REGISTRY).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(name)
    }


def test_histogram_buckets_are_cumulative_and_bounds_inclusive(
    name: str, made: list[Collector]
) -> None:
    histogram = Histogram(name, "test", ["route"], buckets=(0.001, 0.01, 1.0))
    made.append(histogram)
    child = histogram.labels("r")
    for value in (0.001, 0.0005, 0.005, 0.5, 7.0):
        child.observe(value)
    got = samples(name)

    def bucket(le: str) -> float:
        return got[(f"{name}_bucket", (("le", le), ("route", "r")))]

    assert [bucket(le) for le in ("0.001", "0.01", "1.0", "+Inf")] == [2, 3, 4, 5]
    assert got[(f"{name}_count", (("route", "r"),))] == 5
    assert got[(f"{name}_sum", (("route", "r"),))] == pytest.approx(7.5065)


def test_counter_children_are_bound_once_and_exposed_with_total(
    name: str, made: list[Collector]
) -> None:
    counter = Counter(name, "test", ["route", "status"])
    made.append(counter)
    assert counter.labels("a", "200") is counter.labels("a", "200")
    counter.labels("a", "200").inc()
    counter.labels("a", "200").inc()
    counter.labels("a", "503").inc(3)
    got = samples(name)
    assert got[(f"{name}_total", (("route", "a"), ("status", "200")))] == 2
    assert got[(f"{name}_total", (("route", "a"), ("status", "503")))] == 3


def test_a_family_without_children_exposes_no_samples(name: str, made: list[Collector]) -> None:
    made.append(Counter(name, "test", ["route"]))
    assert samples(name) == {}
