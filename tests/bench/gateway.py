"""The relaygate side of the benchmark for one bus: its broker, an ingress node,
the echo worker (row c; row r: with a Redis rate limit; row s: with a JWT and an API
key checked) and the routing worker (row d; row h: the same route with the response
cache on, every request after the first a hit), from a config written here.
On NATS also rows (n), (c) without the access log, (t), (c) with tracing on, and (e),
durable event intake (tests/bench/events.py; the nats-server runs with JetStream)."""

from __future__ import annotations

import http.client
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.bench.events import EVENTS_CONFIG
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
    credentials: tuple[str, ...] = ()  # row (s): a JWT and an API key, as headers
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


BENCH_ISSUER = "https://bench.relaygate.invalid/"


@dataclass(frozen=True, slots=True)
class Signer:
    """Row (s): an RSA key whose public half the `bench` issuer trusts, and one token
    it signed (the ingress verifies it once, then serves it from its token cache)."""

    public_pem: str
    token: str

    @classmethod
    def new(cls) -> Signer:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_pem = (
            private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        now = int(time.time())
        claims = {
            "iss": BENCH_ISSUER,
            "aud": "relaygate-bench",
            "sub": "bench-client",
            "scope": "bench",
            "iat": now,
            "exp": now + 86_400,
        }
        token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "bench"})
        return cls(public_pem, token)


def create_api_key(admin_url: str) -> str:
    """One key for route `secured`, issued through the admin API as a user would.
    Raises OSError or http.client.HTTPException, or ValueError on a refusal."""
    parts = urlsplit(admin_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        body = json.dumps({"subject": "bench-client", "routes": ["secured"]})
        conn.request("POST", "/admin/keys", body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status != 201 and response.status != 200:
        raise ValueError(f"POST /admin/keys: HTTP {response.status}: {data[:200]!r}")
    key: str = json.loads(data)["key"]
    return key


def gateway_config(
    bus_url: str,
    ingress_port: int,
    admin_port: int,
    upstream_port: int,
    redis_url: str | None = None,
    signer: Signer | None = None,
    state_dir: Path | None = None,
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
    secured: list[dict[str, object]] = []
    issuers: dict[str, object] = {}
    if signer is not None:
        issuers = {
            "bench": {
                "issuer": BENCH_ISSUER,
                "audience": ["relaygate-bench"],
                "algorithms": ["RS256"],
                "keys": [{"kid": "bench", "pem": signer.public_pem}],
            }
        }
        secured = [
            {
                "name": "secured",
                "when": {"path": "/secured/{p:path}"},
                "to": {"type": "worker", "topic": "echo"},
                "policies": [{"type": "jwt", "scopes": ["bench"]}, {"type": "api_key"}],
            }
        ]
    state: dict[str, object] = {"url": redis_url}
    if state_dir is not None:
        state["dir"] = str(state_dir)
    return {
        "bus": {"url": bus_url, "prefix": prefix},
        "events": EVENTS_CONFIG,
        "telemetry": telemetry or {},
        "state": state,
        "issuers": issuers,
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
            *secured,
        ],
        "upstreams": {"demo": {"url": f"http://127.0.0.1:{upstream_port}"}},
    }


def _start_broker(launcher: Launcher, bus: BusName, workdir: Path) -> tuple[Started, str]:
    port = free_port()
    if bus == "NATS":
        # JetStream on (row e stores events), in a folder of the bench's own.
        store = workdir / "jetstream"
        command = [venv_bin("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js"]
        command += ["-sd", str(store)]
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
    broker, bus_url = _start_broker(launcher, bus, workdir)
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
    signer = Signer.new()
    config.write_text(
        yaml.safe_dump(
            gateway_config(
                bus_url,
                ingress_port,
                admin_port,
                upstream_port,
                redis_url,
                signer,
                workdir / "state",
            ),
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
    admin_url = f"http://127.0.0.1:{admin_port}"
    credentials: tuple[str, ...] = ()
    try:
        api_key = create_api_key(admin_url)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        print(f"  row (s) skipped: no API key: {exc}", flush=True)
    else:
        credentials = (f"Authorization: Bearer {signer.token}", f"X-API-Key: {api_key}")
    telemetry = None
    if bus == "NATS":
        try:
            telemetry = start_telemetry_rows(launcher, bus_url, upstream_port, workdir)
        except StartFailed as exc:
            print(f"  rows (n) and (t) not run: {exc}", flush=True)
    return Gateway(
        bus=bus,
        base_url=f"http://127.0.0.1:{ingress_port}",
        admin_url=admin_url,
        broker=broker,
        ingress=ingress,
        echo=echo,
        routing=routing,
        redis=redis,
        credentials=credentials,
        telemetry=telemetry,
    )
