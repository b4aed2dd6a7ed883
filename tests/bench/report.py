"""Prints the results side by side (throughput and latency, CPU per request,
ratios against the targets, py-spy summaries) and saves them as JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tests.bench.profiling import Profile
from tests.bench.results import Results, Row

ROLES = ("upstream", "nginx", "ingress", "worker", "broker", "redis")


def _cell(value: float | None, width: int, digits: int = 1) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width},.{digits}f}"


def throughput_table(results: Results) -> list[str]:
    lines = [
        "other = cores busy with processes outside the run (other work on this machine) "
        "during it; above ~0.1 the row's figures are skewed",
        f"{'row':<10} {'path':<44} {'conns':>5} {'req/s':>9} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7} {'non-2xx':>7} {'sockerr':>7} {'CPU us/req':>10} {'other':>6}",
    ]
    for row in results.rows:
        if row.skipped and not row.runs:
            lines.append(f"{row.name:<10} {row.path:<44} skipped (see below)")
            continue
        for i, run in enumerate(row.runs):
            name, path = (row.name, row.path) if i == 0 else ("", "")
            lines.append(
                f"{name:<10} {path:<44} {run.connections:>5} {run.rps:>9,.0f} "
                f"{run.p50_ms:>7.2f} {run.p90_ms:>7.2f} {run.p99_ms:>7.2f} "
                f"{run.non_2xx_3xx:>7} {run.socket_errors:>7} "
                f"{sum(run.cpu_us_per_request.values()):>10.1f} {run.other_cpu_cores:>6.2f}"
            )
    return lines


def cpu_table(results: Results) -> list[str]:
    lines = [
        "CPU per request, us (utime+stime from /proc/PID/stat, delta over the run / requests)",
        f"{'row':<10} {'conns':>5} "
        + " ".join(f"{role:>9}" for role in ROLES)
        + f" {'total':>9} | {'wrk':>6}   processes",
    ]
    for row in results.rows:
        for run in row.runs:
            cells = " ".join(_cell(run.cpu_us_per_request.get(role), 9) for role in ROLES)
            total = sum(run.cpu_us_per_request.values())
            who = ", ".join(row.processes[role] for role in ROLES if role in row.processes)
            lines.append(
                f"{row.name:<10} {run.connections:>5} {cells} {total:>9.1f} | "
                f"{run.wrk_cpu_us_per_request:>6.1f}   {who}"
            )
    return lines


def checks_table(results: Results) -> list[str]:
    lines = ["ratios (targets are for NATS; Kafka rows are shown for comparison)"]
    for check in results.checks:
        if check.value is None:
            value = f"{'n/a':>8}"
        elif check.unit == "ms":
            value = f"{check.value:>+5.2f} ms"
        else:
            value = f"{check.value:>7.2f}x"
        target = f"target {check.target}" if check.target else "no target"
        verdict = {True: "ok", False: "MISS", None: ""}[check.met]
        note = f"  ({check.note})" if check.note else ""
        lines.append(f"{check.bus:<6} {check.what:<32} {value:>9}   {target:<20} {verdict}{note}")
    return lines


def _problems(row: Row) -> list[str]:
    out = []
    if row.skipped:
        verb = "stopped" if row.runs else "skipped"
        out.append(f"{row.name} {row.path}: {verb}: {row.skipped}")
    for run in row.runs:
        if run.non_2xx_3xx or run.socket_errors or run.ingress_counters:
            counters = ", ".join(f"{k} +{v}" for k, v in run.ingress_counters.items())
            out.append(
                f"{row.name} at {run.connections} conns: {run.non_2xx_3xx} non-2xx/3xx, "
                f"{run.socket_errors} socket errors"
                + (f"; ingress counters: {counters}" if counters else "")
            )
    return out


def problems(results: Results) -> list[str]:
    return [line for row in results.rows for line in _problems(row)]


def profile_lines(results: Results) -> list[str]:
    if not results.profiles:
        return []
    rps = f"{results.profiled_rps:,.0f} req/s" if results.profiled_rps else "no figures"
    lines = [
        f"py-spy during an extra (c) NATS run ({rps} while sampling; not in the table above)",
    ]
    for profile in results.profiles:
        if not isinstance(profile, Profile):
            lines.append(f"  {profile}")
            continue
        lines.append(
            f"  {profile.process}: {profile.samples} samples, Python thread busy "
            f"{profile.busy_pct:.0f}% of the run; raw stacks: {profile.raw_path}"
        )
        lines.append(f"    {'self %':>6} {'total %':>7}  function (file:first line)")
        lines.extend(
            f"    {cost.self_pct:>6.1f} {cost.total_pct:>7.1f}  {cost.function}"
            for cost in profile.top
        )
    lines.append(
        "  (self time of Runner.run is the event loop's own C code, uvloop and its I/O, "
        "outside any Python callback)"
    )
    return lines


def render(results: Results) -> str:
    sections = [throughput_table(results), cpu_table(results), checks_table(results)]
    found = problems(results)
    if found:
        sections.append(["problems and skips:", *(f"  {line}" for line in found)])
    profiled = profile_lines(results)
    if profiled:
        sections.append(profiled)
    return "\n\n".join("\n".join(section) for section in sections)


def save_json(results: Results, path: Path) -> None:
    path.write_text(json.dumps(dataclasses.asdict(results), indent=2, default=str) + "\n")
