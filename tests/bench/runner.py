"""Runs the rows in order: (a) direct upstream and (b) nginx, then (c) native and
(d) proxy on each bus; warms each target up, then measures it loaded and at one
connection, with CPU per request of every process on the path."""

from __future__ import annotations

import os
import platform
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from tests.bench import cpu, profiling
from tests.bench.cli import BenchOptions
from tests.bench.events import EVENT_PATH, wait_until_accepted, write_event_script
from tests.bench.gateway import BusName, Gateway, TelemetryRows, start_gateway
from tests.bench.launcher import Launcher, Started, StartFailed, describe
from tests.bench.nginx import nginx_command
from tests.bench.probe import TargetBroken, ingress_stats, stats_delta, wait_until_ok
from tests.bench.report import render, save_json
from tests.bench.results import Results, Row, Run, compute_checks
from tests.bench.tools import Tools, versions
from tests.bench.wrk import WrkFailed, WrkResult, run_wrk, write_script, wrk_command
from tests.support.processes import free_port, venv_bin

REQUEST_PATH = "/bench/item"
# Share of all cores busy, between runs, below which the machine counts as quiet.
QUIET_BUSY_FRACTION = 0.15


def say(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True, slots=True)
class Target:
    """One row's URL and the processes on its path, by role."""

    key: str
    bus: BusName | None
    path: str
    url: str
    processes: dict[str, Started]
    admin_url: str | None = None
    headers: tuple[str, ...] = ()  # sent with every request, e.g. credentials
    script: Path | None = None  # a wrk script of the row's own (row e: POSTed events)


class Bench:
    def __init__(self, options: BenchOptions, tools: Tools, logs: Path) -> None:
        self.options = options
        self.tools = tools
        self.logs = logs
        self.script = write_script(logs)
        self.event_script = write_event_script(logs)
        self.versions = versions(tools)
        self.busy_before = cpu.machine_busy_fraction()
        self.results = Results(meta=self._meta())

    def _meta(self) -> dict[str, object]:
        o = self.options
        return {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "cores": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "busy_before_start": round(self.busy_before, 3),
            "python": platform.python_version(),
            "versions": self.versions,
            "wrk_loaded": f"-t{o.threads} -c{o.connections} -d{o.duration_s}s --latency",
            "wrk_one_connection": f"-t1 -c1 -d{o.duration_s}s --latency",
            "warmup_s": o.warmup_s,
        }

    def _wrk(
        self,
        url: str,
        threads: int,
        connections: int,
        seconds: int,
        tag: str,
        headers: tuple[str, ...] = (),
        script: Path | None = None,
    ) -> tuple[WrkResult, str]:
        command = wrk_command(
            url,
            threads=threads,
            connections=connections,
            duration_s=seconds,
            script=script or self.script,
            headers=headers,
        )
        return run_wrk(command, self.logs / f"wrk-{tag}.txt", seconds), shlex.join(command)

    def measure(self, target: Target, baseline: Target | None = None) -> Row:
        """Warm up and measure `target` loaded and at one connection. With `baseline`
        (the same path without the feature), the baseline is measured loaded just before
        and just after the target's loaded run, and the ratio uses their mean."""
        name = f"({target.key}) {target.bus}" if target.bus else f"({target.key})"
        row = Row(
            target.key,
            target.bus,
            target.path,
            target.url,
            {role: started.name for role, started in target.processes.items()},
        )
        self.results.rows.append(row)
        try:
            if target.script is None:
                wait_until_ok(target.url, headers=target.headers)
            else:
                wait_until_accepted(target.url)
            o = self.options
            self._wait_for_quiet()
            if o.warmup_s:
                say(f"warming up {name} {o.connections} conns {o.warmup_s}s…")
                self._wrk(
                    target.url,
                    o.threads,
                    o.connections,
                    o.warmup_s,
                    f"{target.key}-warm",
                    target.headers,
                    target.script,
                )
            if baseline is not None:
                row.runs.append(self._rounds(row, target, baseline, name))
            else:
                say(f"running {name} {o.connections} conns {o.duration_s}s…")
                row.runs.append(self._measured_run(target, o.threads, o.connections))
            say(f"running {name} 1 conn {o.duration_s}s…")
            row.runs.append(self._measured_run(target, 1, 1))
        except (TargetBroken, WrkFailed) as exc:
            row.skipped = str(exc)
            say(f"  {name} failed: {exc}")
        return row

    def _rounds(self, row: Row, target: Target, baseline: Target, name: str) -> Run:
        """Loaded runs of the baseline and the target in turn (see `Row.paired`); the
        target's run with the median req/s stands for the row in the table."""
        o = self.options
        threads, conns = o.threads, o.connections
        paired = row.paired[baseline.key] = [self._baseline_run(baseline, name)]
        for n in range(1, o.rounds + 1):
            say(f"running {name} {conns} conns {o.duration_s}s (round {n} of {o.rounds})…")
            row.rounds.append(self._measured_run(target, threads, conns))
            paired.append(self._baseline_run(baseline, name))
        ratios = row.round_ratios(baseline.key, conns)
        if len(ratios) > 1:
            say(f"  {name} / ({baseline.key}) by round: " + ", ".join(f"{r:.3f}" for r in ratios))
        return sorted(row.rounds, key=lambda run: run.rps)[(len(row.rounds) - 1) // 2]

    def _baseline_run(self, baseline: Target, name: str) -> Run:
        o = self.options
        say(f"  baseline ({baseline.key}) for {name} {o.connections} conns {o.duration_s}s…")
        return self._measured_run(baseline, o.threads, o.connections)

    def _wait_for_quiet(self) -> None:
        limit = self.options.quiet_wait_s
        busy = cpu.machine_busy_fraction(0.5)
        if not limit or busy <= QUIET_BUSY_FRACTION:
            return
        say(f"waiting up to {limit}s for other work to stop ({busy:.0%} of the cores busy)…")
        deadline = time.monotonic() + limit
        while busy > QUIET_BUSY_FRACTION and time.monotonic() < deadline:
            busy = cpu.machine_busy_fraction(1.0)
        if busy > QUIET_BUSY_FRACTION:
            say(f"  still {busy:.0%} busy: measuring anyway (see the 'other' column)")

    def _measured_run(self, target: Target, threads: int, conns: int) -> Run:
        pids = {role: started.pid for role, started in target.processes.items()}
        counters = ingress_stats(target.admin_url) if target.admin_url else {}
        before, machine_before = cpu.snapshot(pids), cpu.machine_busy_seconds()
        tag = f"{target.key}-{(target.bus or '').lower()}-{conns}"
        result, command = self._wrk(
            target.url, threads, conns, self.options.duration_s, tag, target.headers, target.script
        )
        after, machine_after = cpu.snapshot(pids), cpu.machine_busy_seconds()
        # CPU that neither wrk nor the row's processes used: other work skewing this run.
        ours = sum(after.values()) - sum(before.values()) + result.wrk_cpu_s
        other = max(0.0, machine_after - machine_before - ours) / result.duration_s
        moved = stats_delta(counters, ingress_stats(target.admin_url)) if target.admin_url else {}
        dead = [s.name for s in target.processes.values() if not s.process.alive()]
        if dead:
            raise TargetBroken(f"{', '.join(dead)} exited during the run (see the logs)")
        run = Run(
            connections=conns,
            threads=threads,
            requests=result.requests,
            rps=result.rps,
            p50_ms=result.p50_ms,
            p90_ms=result.p90_ms,
            p99_ms=result.p99_ms,
            max_ms=result.max_ms,
            non_2xx_3xx=result.non_2xx_3xx,
            socket_errors=result.socket_errors,
            cpu_us_per_request=cpu.per_request_us(before, after, result.requests),
            wrk_cpu_us_per_request=result.wrk_cpu_s * 1e6 / max(1, result.requests),
            other_cpu_cores=other,
            ingress_counters=moved,
            command=command,
        )
        say(
            f"  {run.rps:,.0f} req/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
            f"{sum(run.cpu_us_per_request.values()):.1f} us CPU/req"
            + (f", {run.non_2xx_3xx} non-2xx/3xx" if run.non_2xx_3xx else "")
            + (f", {run.socket_errors} socket errors" if run.socket_errors else "")
            + (f"; ingress counters: {moved}" if moved else "")
            + (f"; other processes used {other:.2f} cores" if other > 0.1 else "")
        )
        return run

    def skip(self, key: str, bus: BusName, path: str, reason: str) -> None:
        self.results.rows.append(Row(key, bus, path, "", {}, skipped=reason))
        say(f"  ({key}) {bus} skipped: {reason}")

    def profile(self, target: Target) -> None:
        binary = self.tools.py_spy
        assert binary is not None  # find_tools checked it for --profile
        o = self.options
        say(f"profiling (c) NATS with py-spy: {o.connections} conns {o.duration_s}s…")
        recorders = [
            profiling.Recorder(
                binary, role_name, target.processes[role].pid, o.duration_s, self.logs
            )
            for role, role_name in (("ingress", "ingress"), ("worker", "echo worker"))
        ]
        try:
            result, _ = self._wrk(target.url, o.threads, o.connections, o.duration_s, "c-prof")
            self.results.profiled_rps = result.rps
        except WrkFailed as exc:
            say(f"  profiling run failed: {exc}")
        self.results.profiles = [recorder.finish() for recorder in recorders]

    def run_gateway(self, bus: BusName, upstream: Started, upstream_port: int) -> None:
        logs = self.logs / bus.lower()
        logs.mkdir(exist_ok=True)
        native = f"ingress -> {bus} -> echo worker"
        proxy = f"ingress -> {bus} -> routing worker -> (a)"
        say(f"starting relaygate on {bus}…")
        with Launcher(logs) as launcher:
            try:
                gateway = start_gateway(launcher, bus, upstream_port, logs)
            except StartFailed as exc:
                say(f"  {exc.name} failed to start on {bus}; its log ends:\n{exc.tail()}")
                self.skip("c", bus, native, str(exc))
                self.skip("d", bus, proxy, str(exc))
                return
            for started in launcher.started:
                say("  " + describe(started))
            self._gateway_rows(gateway, upstream, native, proxy)

    def _gateway_rows(self, gateway: Gateway, upstream: Started, native: str, proxy: str) -> None:
        bus = gateway.bus
        common = {"ingress": gateway.ingress, "broker": gateway.broker}
        if isinstance(gateway.echo, StartFailed):
            say(f"  echo worker failed to start; its log ends:\n{gateway.echo.tail()}")
            self.skip("c", bus, native, str(gateway.echo))
        else:
            native_target = Target(
                "c",
                bus,
                native,
                gateway.base_url + "/echo" + REQUEST_PATH,
                {**common, "worker": gateway.echo},
                gateway.admin_url,
            )
            row = self.measure(native_target)
            if self.options.profile and bus == "NATS" and not row.skipped:
                self.profile(native_target)
            if bus == "NATS":
                self.measure(
                    Target(
                        "e",
                        bus,
                        "event intake: CloudEvent checked, JetStream publish acked -> 202",
                        gateway.base_url + EVENT_PATH,
                        common,
                        gateway.admin_url,
                        script=self.event_script,
                    )
                )
            if gateway.telemetry is not None:
                self._telemetry_rows(gateway, gateway.telemetry, native_target)
            if gateway.redis is not None:
                self.measure(
                    Target(
                        "r",
                        bus,
                        "(c) + rate limit decided in Redis",
                        gateway.base_url + "/limited" + REQUEST_PATH,
                        {**common, "worker": gateway.echo, "redis": gateway.redis},
                        gateway.admin_url,
                    ),
                    native_target,
                )
            if gateway.credentials:
                self.measure(
                    Target(
                        "s",
                        bus,
                        "(c) + JWT (cached key) + API key checked",
                        gateway.base_url + "/secured" + REQUEST_PATH,
                        {**common, "worker": gateway.echo},
                        gateway.admin_url,
                        gateway.credentials,
                    ),
                    native_target,
                )
        if isinstance(gateway.routing, StartFailed):
            say(f"  routing worker failed to start; its log ends:\n{gateway.routing.tail()}")
            self.skip("d", bus, proxy, str(gateway.routing))
        else:
            proxy_target = Target(
                "d",
                bus,
                proxy,
                gateway.base_url + "/proxy" + REQUEST_PATH,
                {**common, "worker": gateway.routing, "upstream": upstream},
                gateway.admin_url,
            )
            self.measure(proxy_target)
            self.measure(
                Target(
                    "h",
                    bus,
                    "(d) with the response cache on: hits"
                    + (" from Redis" if gateway.redis is not None else " from memory"),
                    gateway.base_url + "/cached" + REQUEST_PATH,
                    {**common, "redis": gateway.redis} if gateway.redis is not None else common,
                    gateway.admin_url,
                ),
                proxy_target,
            )

    def _telemetry_rows(self, gateway: Gateway, rows: TelemetryRows, native: Target) -> None:
        """(n): (c) with the access log off; (t): (c) with tracing on, 100 % sampled."""
        broker = {"broker": gateway.broker}
        echo = native.processes["worker"]
        self.measure(
            Target(
                "n",
                gateway.bus,
                "(c) without the access log",
                rows.quiet_url + "/echo" + REQUEST_PATH,
                {**broker, "ingress": rows.quiet_ingress, "worker": echo},
            ),
            native,
        )
        if isinstance(rows.traced_echo, StartFailed):
            self.skip("t", gateway.bus, "(c) traced", str(rows.traced_echo))
            return
        self.measure(
            Target(
                "t",
                gateway.bus,
                "(c) with tracing, every trace sampled, batch OTLP export to a local receiver",
                rows.traced_url + "/echo" + REQUEST_PATH,
                {
                    **broker,
                    "ingress": rows.traced_ingress,
                    "worker": rows.traced_echo,
                    "otlp": rows.receiver,
                },
            ),
            native,
        )


def run_bench(options: BenchOptions, tools: Tools, logs: Path) -> int:
    bench = Bench(options, tools, logs)
    meta = bench.results.meta
    say(
        f"relaygate bench: {meta['cores']} cores, load average {meta['loadavg_at_start']}, "
        f"Python {meta['python']}; logs in {logs}"
    )
    for tool, version in bench.versions.items():
        say(f"  {tool}: {version}")
    say(
        f"  wrk {meta['wrk_loaded']} and {meta['wrk_one_connection']}, "
        f"-s {bench.script} (a Lua done() hook that prints exact percentiles)"
    )
    busy = bench.busy_before
    if busy > 0.1:
        say(
            f"warning: the machine was {busy:.0%} busy before the bench started (other "
            "processes); every figure below is lower than on an idle machine"
        )
    buses: list[BusName] = ["NATS"] if options.skip_kafka else ["NATS", "Kafka"]
    with Launcher(logs) as base:
        upstream_port, nginx_port = free_port(), free_port()
        try:
            upstream = base.start(
                "upstream",
                [venv_bin("relaygate"), "demo-upstream", "--port", str(upstream_port)],
                port=upstream_port,
            )
            nginx = base.start(
                "nginx",
                nginx_command(tools.nginx, logs / "nginx", nginx_port, upstream_port),
                port=nginx_port,
            )
        except StartFailed as exc:
            say(f"bench: {exc.name} did not start; its log ends:\n{exc.tail()}")
            return 1
        for started in base.started:
            say("  " + describe(started))
        direct = f"http://127.0.0.1:{upstream_port}{REQUEST_PATH}"
        bench.measure(Target("a", None, "direct upstream", direct, {"upstream": upstream}))
        via_nginx = f"http://127.0.0.1:{nginx_port}{REQUEST_PATH}"
        bench.measure(
            Target("b", None, "nginx -> (a)", via_nginx, {"nginx": nginx, "upstream": upstream})
        )
        for bus in buses:
            bench.run_gateway(bus, upstream, upstream_port)
    results = bench.results
    results.meta["loadavg_at_end"] = os.getloadavg()
    results.checks = compute_checks(results, options.connections, list(buses))
    say("")
    say(render(results))
    say(f"\nload average at end: {results.meta['loadavg_at_end']}")
    if options.json_path is not None:
        save_json(results, options.json_path)
        say(f"saved {options.json_path}")
    essential = [results.row("a", None), results.row("b", None), results.row("c", "NATS")]
    return 0 if all(r is not None and not r.skipped for r in essential) else 1
