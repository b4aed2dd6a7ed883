"""The relaygate side of the benchmark for one bus: its broker, an ingress node,
the echo worker (row c) and the routing worker (row d; row h: the same route with the
response cache on, every request after the first a hit), from a config written here."""

from __future__ import annotations

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
        "bus": {"url": bus_url},
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
    launcher: Launcher, kind: str, config: Path, workdir: Path, extra: list[str]
) -> Started | StartFailed:
    ready = workdir / f"ready-{kind}"
    command = [venv_bin("relaygate"), "worker", kind, "--config", str(config), *extra]
    try:
        return launcher.start(
            f"{kind} worker", [*command, "--ready-file", str(ready)], ready_file=ready
        )
    except StartFailed as exc:
        return exc


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
    return Gateway(
        bus=bus,
        base_url=f"http://127.0.0.1:{ingress_port}",
        admin_url=f"http://127.0.0.1:{admin_port}",
        broker=broker,
        ingress=ingress,
        echo=echo,
        routing=routing,
        redis=redis,
    )
