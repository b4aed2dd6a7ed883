"""The relaygate side of the benchmark for one bus: its broker, an ingress node,
the echo worker (row c) and the routing worker (row d; row h: the same route with the
response cache on, every request after the first a hit), from a config written here.
On NATS also rows (n), (c) without the access log, and (t), (c) with tracing on."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from tests.bench.launcher import Launcher, Started, StartFailed, clean_env
from tests.support.processes import free_port, tansu_command, venv_bin

BusName = Literal["NATS", "Kafka"]


@dataclass(frozen=True, slots=True)
class Gateway:
    bus: BusName
    base_url: str
    admin_url: str
    broker: Started
    ingress: Started
    echo: Started | StartFailed
    routing: Started | StartFailed
    redis: Started | None = None  # NATS only: the state store of the rate-limited route
    telemetry: TelemetryRows | None = None  # NATS only: rows (n) and (t)


@dataclass(frozen=True, slots=True)
class TelemetryRows:
    """Row (n): a second ingress with the access log off, on (c)'s bus and workers.
    Row (t): an ingress and an echo worker with tracing on, every trace sampled, on a bus
    prefix of their own, exporting in batches to a local OTLP receiver."""

    quiet_url: str
    quiet_ingress: Started
    traced_url: str
    traced_ingress: Started
    traced_echo: Started | StartFailed
    receiver: Started


# A limit no run reaches: the row measures what the Redis decision costs, not 429s.
RATE_LIMIT = {
    "type": "rate_limit",
    "name": "bench",
    "key": ["client_address"],
    "limits": [{"requests": 1_000_000_000, "window_s": 1}],
}


def gateway_config(
    bus_url: str,
    ingress_port: int,
    admin_port: int,
    upstream_port: int,
    redis_url: str | None = None,
    *,
    prefix: str = "rg",
    telemetry: dict[str, object] | None = None,
) -> dict[str, object]:
    limited = []
    if redis_url is not None:
        limited = [
            {
                "name": "limited",
                "when": {"path": "/limited/{p:path}"},
                "to": {"type": "worker", "topic": "echo"},
                "policies": [RATE_LIMIT],
            }
        ]
    return {
        "bus": {"url": bus_url, "prefix": prefix},
        "telemetry": telemetry or {},
        "state": {"url": redis_url},
        "ingress": {"port": ingress_port},
        "admin": {"port": admin_port},
        "routes": [
            {
                "name": "echo",
                "when": {"path": "/echo/{p:path}"},
                "to": {"type": "worker", "topic": "echo"},
            },
            {
                "name": "proxy",
                "when": {"path": "/proxy/{p:path}"},
                "to": {"type": "upstream", "upstream": "demo", "path": "/{p}"},
            },
            {
                "name": "cached",
                "when": {"path": "/cached/{p:path}"},
                "to": {"type": "upstream", "upstream": "demo", "path": "/{p}"},
                "cache": {"ttl_s": 3600},  # the upstream sends no Cache-Control
            },
            *limited,
        ],
        "upstreams": {"demo": {"url": f"http://127.0.0.1:{upstream_port}"}},
    }


def _start_broker(launcher: Launcher, bus: BusName) -> tuple[Started, str]:
    port = free_port()
    if bus == "NATS":
        command = [venv_bin("nats-server"), "-a", "127.0.0.1", "-p", str(port)]
        return launcher.start("nats-server", command, port=port), f"nats://127.0.0.1:{port}"
    command = tansu_command(port)
    started = launcher.start("tansu", command, port=port, env=clean_env(RUST_LOG="warn"))
    return started, f"kafka://127.0.0.1:{port}"


def _start_worker(
    launcher: Launcher,
    kind: str,
    config: Path,
    workdir: Path,
    extra: list[str],
    *,
    name: str | None = None,
    env: dict[str, str] | None = None,
) -> Started | StartFailed:
    name = name or f"{kind} worker"
    ready = workdir / f"ready-{name.replace(' ', '-')}"
    command = [venv_bin("relaygate"), "worker", kind, "--config", str(config), *extra]
    try:
        return launcher.start(
            name, [*command, "--ready-file", str(ready)], ready_file=ready, env=env
        )
    except StartFailed as exc:
        return exc


def _start_ingress(
    launcher: Launcher, name: str, config: Path, workdir: Path, env: dict[str, str] | None = None
) -> Started:
    ready = workdir / f"ready-{name.replace(' ', '-')}"
    command = [venv_bin("relaygate"), "ingress", "--config", str(config)]
    return launcher.start(name, [*command, "--ready-file", str(ready)], ready_file=ready, env=env)


def _write(path: Path, config: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_telemetry_rows(
    launcher: Launcher, bus_url: str, upstream_port: int, workdir: Path
) -> TelemetryRows:
    """The processes of rows (n) and (t); see `TelemetryRows`."""
    quiet_port, traced_port = free_port(), free_port()
    quiet = _write(
        workdir / "relaygate-quiet.yaml",
        gateway_config(
            bus_url, quiet_port, free_port(), upstream_port,
            telemetry={"logs": {"access_log": False}},
        ),
    )  # fmt: skip
    traced = _write(
        workdir / "relaygate-traced.yaml",
        gateway_config(
            bus_url, traced_port, free_port(), upstream_port,
            prefix="rgtraced", telemetry={"tracing": {"enabled": True, "sample_ratio": 1.0}},
        ),
    )  # fmt: skip
    receiver_port = free_port()
    receiver = launcher.start(
        "otlp receiver",
        [sys.executable, "-m", "tests.telemetry.otlp", "--port", str(receiver_port)],
        port=receiver_port,
    )
    otel = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver_port}")
    return TelemetryRows(
        quiet_url=f"http://127.0.0.1:{quiet_port}",
        quiet_ingress=_start_ingress(launcher, "ingress no access log", quiet, workdir),
        traced_url=f"http://127.0.0.1:{traced_port}",
        traced_ingress=_start_ingress(launcher, "ingress traced", traced, workdir, otel),
        traced_echo=_start_worker(
            launcher, "echo", traced, workdir, ["--topic", "echo"], name="echo traced", env=otel
        ),
        receiver=receiver,
    )


def start_gateway(launcher: Launcher, bus: BusName, upstream_port: int, workdir: Path) -> Gateway:
    """Broker and ingress must start (else StartFailed); a worker that fails is
    recorded in its field so that the other row still runs."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker, bus_url = _start_broker(launcher, bus)
    redis, redis_url = None, None
    if bus == "NATS":
        redis_port = free_port()
        redis = launcher.start(
            "redis-server",
            [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            port=redis_port,
        )
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
    ingress_port, admin_port = free_port(), free_port()
    config = workdir / "relaygate.yaml"
    config.write_text(
        yaml.safe_dump(
            gateway_config(bus_url, ingress_port, admin_port, upstream_port, redis_url),
            sort_keys=False,
        )
    )
    ready = workdir / "ready-ingress"
    ingress = launcher.start(
        "ingress",
        [
            venv_bin("relaygate"),
            "ingress",
            "--config",
            str(config),
            "--ready-file",
            str(ready),
        ],
        ready_file=ready,
    )
    echo = _start_worker(launcher, "echo", config, workdir, ["--topic", "echo"])
    routing = _start_worker(launcher, "routing", config, workdir, [])
    telemetry = None
    if bus == "NATS":
        try:
            telemetry = start_telemetry_rows(launcher, bus_url, upstream_port, workdir)
        except StartFailed as exc:
            print(f"  rows (n) and (t) not run: {exc}", flush=True)
    return Gateway(
        bus=bus,
        base_url=f"http://127.0.0.1:{ingress_port}",
        admin_url=f"http://127.0.0.1:{admin_port}",
        broker=broker,
        ingress=ingress,
        echo=echo,
        routing=routing,
        redis=redis,
        telemetry=telemetry,
    )
