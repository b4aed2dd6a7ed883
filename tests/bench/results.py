"""What one bench run found: a row per path, a run per connection count, and the
ratios checked against DESIGN.md's targets."""

from __future__ import annotations

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
    # Loaded runs of the row this one is compared with (its baseline), measured just
    # before and just after this row's own loaded run: on a machine whose speed drifts,
    # a ratio against rows measured minutes apart says more about the drift.
    paired: dict[str, list[Run]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"({self.key}) {self.bus}" if self.bus else f"({self.key})"

    def run_at(self, connections: int) -> Run | None:
        return next((r for r in self.runs if r.connections == connections), None)

    def paired_rps(self, key: str) -> float | None:
        """The mean req/s of the baseline runs measured around this row's, if any."""
        runs = self.paired.get(key)
        return sum(r.rps for r in runs) / len(runs) if runs else None


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
) -> tuple[float, float] | None:
    """(numerator, denominator) req/s when one of the two rows was measured between two
    runs of the other (see `Row.paired`); None otherwise."""
    if top_row is not None and (den := top_row.paired_rps(bottom)):
        run = top_row.run_at(connections)
        return (run.rps, den) if run is not None else None
    if bottom_row is not None and (num := bottom_row.paired_rps(top)):
        run = bottom_row.run_at(connections)
        return (num, run.rps) if run is not None and run.rps > 0 else None
    return None


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
            pair = _paired(top_row, bottom_row, top, bottom, connections)
            if pair is not None:
                value = pair[0] / pair[1]
                what = f"({top})/({bottom}) req/s at {connections} conns, paired"
                checks.append(Check(bus, what, value, "x", f">= {target:.2f}", value >= target))
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
