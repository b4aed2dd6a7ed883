"""The bench's ratio arithmetic (no processes: the bench itself is run by hand)."""

from __future__ import annotations

import pytest

from tests.bench.results import Results, Row, Run, compute_checks


def _run(rps: float, connections: int = 64) -> Run:
    return Run(
        connections, 2, int(rps * 10), rps, 1.0, 1.5, 2.0, 3.0, 0, 0, {}, 5.0, 0.0, {}, "wrk"
    )


def _row(key: str, rps: float) -> Row:
    return Row(key, "NATS", key, f"http://127.0.0.1/{key}", {}, runs=[_run(rps), _run(rps, 1)])


def _check(results: Results, what: str) -> tuple[float | None, str]:
    [check] = [c for c in compute_checks(results, 64, ["NATS"]) if c.what.startswith(what)]
    return check.value, check.note


def test_a_feature_row_is_the_median_of_its_rounds_against_the_baselines_around_each() -> None:
    c = _row("c", 1000)
    t = _row("t", 900)
    # baseline 1000, t 900, baseline 1200, t 1000, baseline 1000, t 600, baseline 1000
    t.paired["c"] = [_run(1000), _run(1200), _run(1000), _run(1000)]
    t.rounds = [_run(900), _run(1000), _run(600)]
    value, note = _check(Results({}, [c, t]), "(t)/(c)")
    # rounds: 900/1100, 1000/1100, 600/1000: the median is the first
    assert value == pytest.approx(900 / 1100)
    assert note == "median of 3 rounds: 0.82, 0.91, 0.60"


def test_a_baseline_measured_around_the_denominator_row_gives_the_inverse() -> None:
    # (c)/(n): row n is measured between runs of (c)
    n = _row("n", 1000)
    n.paired["c"] = [_run(900), _run(950)]
    n.rounds = [_run(1000)]
    value, note = _check(Results({}, [_row("c", 1), n]), "(c)/(n)")
    assert value == pytest.approx(925 / 1000)
    assert note == ""


def test_rounds_without_a_baseline_on_each_side_are_not_paired() -> None:
    t = _row("t", 850)
    t.paired["c"] = [_run(1000)]  # the run after the row is missing
    t.rounds = [_run(850)]
    value, _ = _check(Results({}, [_row("c", 1000), t]), "(t)/(c)")
    assert value == pytest.approx(0.85)  # the plain ratio of the two rows' own runs
