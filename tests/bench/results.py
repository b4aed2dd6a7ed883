"""What one bench run found: a row per path, a run per connection count, and the
ratios checked against DESIGN.md's targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from tests.bench.profiling import Profile

# Throughput ratios (row / row at the main connection count) and their NATS targets.
THROUGHPUT_TARGETS: tuple[tuple[str, str, float], ...] = (
    ("c", "a", 0.55),
    ("c", "b", 0.75),
    ("d", "b", 0.40),
)
# Issue 5: durable event intake (202 after the bus acknowledged) vs the direct upstream;
# NATS only (row e runs there).
EVENT_TARGETS: tuple[tuple[str, str, float], ...] = (("e", "a", 0.45),)
# p50 of (c) minus p50 of (a) at one connection, in ms.
UNLOADED_P50_TARGET_MS = 0.5
TARGET_BUS = "NATS"
RATE_LIMIT_TARGET = 0.8  # issue 4: Redis-backed rate limiting keeps >= 0.8 x throughput
CACHE_HIT_TARGET = 1.5  # issue 4: a cache hit >= 1.5 x the same route uncached
AUTH_TARGET = 0.85  # issue 3: JWT (cached key) + API key check keep >= 0.85 x throughput
TRACING_TARGET = 0.85  # issue 6: tracing at 100 % sampling keeps >= 0.85 x throughput
ACCESS_LOG_TARGET = 0.9  # issue 6: the JSON access log keeps >= 0.9 x throughput
# Rows compared with another row on the same bus: (r) rate limit on vs (c), (h) cache
# hit vs (d) the same route uncached, (s) JWT + API key vs (c), (t) traced vs (c), (c)
# with its access log vs (n) without.
SAME_BUS_TARGETS: tuple[tuple[str, str, float], ...] = (
    ("r", "c", RATE_LIMIT_TARGET),
    ("s", "c", AUTH_TARGET),
    ("h", "d", CACHE_HIT_TARGET),
    ("t", "c", TRACING_TARGET),
    ("c", "n", ACCESS_LOG_TARGET),
)
# Shown without a target.
SAME_BUS_RATIOS: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Run:
    connections: int
    threads: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx_3xx: int
    socket_errors: int
    cpu_us_per_request: dict[str, float]
    wrk_cpu_us_per_request: float
    other_cpu_cores: float
    ingress_counters: dict[str, int]
    command: str


@dataclass(slots=True)
class Row:
    key: str
    bus: str | None
    path: str
    url: str
    processes: dict[str, str]
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None
    # Loaded runs of the row this one is compared with (its baseline), alternating with
    # this row's loaded runs (`rounds`): baseline, row, baseline, row, …, baseline. On a
    # machine whose speed drifts, a ratio against rows measured minutes apart says more
    # about the drift; each round compares the row with the baseline runs just before and
    # just after it, and the ratio is the median of the rounds'.
    paired: dict[str, list[Run]] = field(default_factory=dict)
    rounds: list[Run] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"({self.key}) {self.bus}" if self.bus else f"({self.key})"

    def run_at(self, connections: int) -> Run | None:
        return next((r for r in self.runs if r.connections == connections), None)

    def round_ratios(self, key: str, connections: int) -> list[float]:
        """Per round: this row's req/s over the mean of the `key` baseline runs around
        it. Empty when the row was not paired with `key` at that connection count."""
        baselines = self.paired.get(key, [])
        rounds = [r for r in self.rounds if r.connections == connections]
        if not rounds or len(baselines) != len(rounds) + 1:
            return []
        ratios = []
        for i, run in enumerate(rounds):
            around = (baselines[i].rps + baselines[i + 1].rps) / 2
            if around > 0:
                ratios.append(run.rps / around)
        return ratios


@dataclass(frozen=True, slots=True)
class Check:
    bus: str
    what: str
    value: float | None
    unit: str
    target: str | None
    met: bool | None
    note: str = ""


@dataclass(slots=True)
class Results:
    meta: dict[str, object]
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    profiles: list[Profile | str] = field(default_factory=list)
    profiled_rps: float | None = None

    def row(self, key: str, bus: str | None) -> Row | None:
        return next((r for r in self.rows if r.key == key and r.bus == bus), None)


def _missing(row: Row | None, key: str) -> str:
    if row is None:
        return f"({key}) not run"
    return f"({key}) skipped" if row.skipped else f"({key}) has no run at that connection count"


def _paired(
    top_row: Row | None, bottom_row: Row | None, top: str, bottom: str, connections: int
) -> list[float]:
    """(top)/(bottom) per round when one of the two rows alternated with the other (see
    `Row.paired`); empty otherwise."""
    if top_row is not None and (ratios := top_row.round_ratios(bottom, connections)):
        return ratios
    if bottom_row is not None and (ratios := bottom_row.round_ratios(top, connections)):
        return [1 / r for r in ratios if r > 0]
    return []


def compute_checks(results: Results, connections: int, buses: list[str]) -> list[Check]:
    checks: list[Check] = []
    for bus in buses:
        targeted = bus == TARGET_BUS
        for top, bottom, target in THROUGHPUT_TARGETS + (EVENT_TARGETS if targeted else ()):
            num_row = results.row(top, bus)
            den_row = results.row(bottom, None)
            num = num_row.run_at(connections) if num_row else None
            den = den_row.run_at(connections) if den_row else None
            what = f"({top})/({bottom}) req/s at {connections} conns"
            if num is None or den is None or den.rps == 0:
                note = _missing(num_row, top) if num is None else _missing(den_row, bottom)
                wanted = f">= {target:.2f}" if targeted else None
                checks.append(Check(bus, what, None, "x", wanted, None, note))
                continue
            value = num.rps / den.rps
            checks.append(
                Check(
                    bus,
                    what,
                    value,
                    "x",
                    f">= {target:.2f}" if targeted else None,
                    value >= target if targeted else None,
                )
            )
        for top, bottom, target in SAME_BUS_TARGETS:
            top_row, bottom_row = results.row(top, bus), results.row(bottom, bus)
            rounds = _paired(top_row, bottom_row, top, bottom, connections)
            if rounds:
                value = statistics.median(rounds)
                what = f"({top})/({bottom}) req/s at {connections} conns, paired"
                note = (
                    f"median of {len(rounds)} rounds: " + ", ".join(f"{r:.2f}" for r in rounds)
                    if len(rounds) > 1
                    else ""
                )
                checks.append(
                    Check(bus, what, value, "x", f">= {target:.2f}", value >= target, note)
                )
                continue
            num = top_row.run_at(connections) if top_row else None
            den = bottom_row.run_at(connections) if bottom_row else None
            if num is not None and den is not None and den.rps > 0:
                value = num.rps / den.rps
                what = f"({top})/({bottom}) req/s at {connections} conns"
                checks.append(Check(bus, what, value, "x", f">= {target:.2f}", value >= target))
        for top, bottom in SAME_BUS_RATIOS:
            top_row, bottom_row = results.row(top, bus), results.row(bottom, bus)
            num = top_row.run_at(connections) if top_row else None
            den = bottom_row.run_at(connections) if bottom_row else None
            if num is not None and den is not None and den.rps > 0:
                what = f"({top})/({bottom}) req/s at {connections} conns"
                checks.append(Check(bus, what, num.rps / den.rps, "x", None, None))
        c_row, a_row = results.row("c", bus), results.row("a", None)
        c1 = c_row.run_at(1) if c_row else None
        a1 = a_row.run_at(1) if a_row else None
        what = "p50 (c) - p50 (a) at 1 conn"
        if c1 is None or a1 is None:
            note = _missing(c_row, "c") if c1 is None else _missing(a_row, "a")
            wanted = f"<= {UNLOADED_P50_TARGET_MS:.2f} ms" if targeted else None
            checks.append(Check(bus, what, None, "ms", wanted, None, note))
            continue
        delta = c1.p50_ms - a1.p50_ms
        checks.append(
            Check(
                bus,
                what,
                delta,
                "ms",
                f"<= {UNLOADED_P50_TARGET_MS:.2f} ms" if targeted else None,
                delta <= UNLOADED_P50_TARGET_MS if targeted else None,
            )
        )
    return checks
