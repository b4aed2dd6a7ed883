"""A gateway with tracing on, as a user runs it: `relaygate up` (ingress, routing worker,
embedded NATS, or Kafka) proxying to a real upstream, exporting spans over OTLP/HTTP to a
receiver the tests own, configured only through the standard OTEL_* variables."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import bus_section
from tests.support.gateway import RelaygateUp, running_up, wait_routed, wait_until
from tests.support.processes import free_port
from tests.support.reflector import Reflector
from tests.telemetry.otlp import OtlpReceiver

PREFIX = "/up"
ROUTE = "proxy"
# Names whose values the log lines must never show.
REDACT_FIELDS = ["card_number"]


@dataclass
class Traced:
    up: RelaygateUp
    receiver: OtlpReceiver
    bus: str

    @property
    def url(self) -> str:
        return self.up.url

    def worker_metrics_urls(self) -> list[str]:
        """The workers' /metrics addresses, from the lines `relaygate up` prints."""
        wait_until(lambda: "metrics  ingress" in self.up.log(), 10.0, "metrics banner", self.up)
        return re.findall(r"worker \S+ (http://\S+/metrics)", self.up.log())


@pytest.fixture(scope="module")
def reflector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reflector]:
    upstream = Reflector(tmp_path_factory.mktemp("reflector")).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver().start()
    yield otlp
    otlp.stop()


def gateway_config(request: pytest.FixtureRequest, bus: str, upstream_url: str) -> dict[str, Any]:
    """`proxy` to the reflector; `cached` and `limited` (2 per minute) to it too; `dead`
    to a port where nothing listens, whose breaker opens after 2 failures; `refused` to
    another such port, with the default breaker."""
    return {
        "bus": bus_section(request, bus),
        "telemetry": {"logs": {"level": "debug", "redact_fields": REDACT_FIELDS}},
        "routes": [
            {
                "name": ROUTE,
                "when": {"path": PREFIX + "/{rest:path}"},
                "to": {"type": "upstream", "upstream": "reflector", "path": "/{rest}"},
                "timeout_ms": 10_000,
            },
            {
                "name": "cached",
                "when": {"path": "/cached/{rest:path}"},
                "to": {"type": "upstream", "upstream": "reflector", "path": "/{rest}"},
                "cache": {"ttl_s": 300},
            },
            {
                "name": "limited",
                "when": {"path": "/limited/{rest:path}"},
                "to": {"type": "upstream", "upstream": "reflector", "path": "/{rest}"},
                "policies": [{"type": "rate_limit", "limits": [{"requests": 2, "window_s": 60}]}],
            },
            {
                "name": "dead",
                "when": {"path": "/dead/{rest:path}"},
                "to": {"type": "upstream", "upstream": "dead"},
            },
            {
                "name": "refused",
                "when": {"path": "/refused/{rest:path}"},
                "to": {"type": "upstream", "upstream": "refused"},
            },
        ],
        "upstreams": {
            "reflector": {"url": upstream_url},
            "refused": {"url": f"http://127.0.0.1:{free_port()}", "retries": {"attempts": 1}},
            "dead": {
                "url": f"http://127.0.0.1:{free_port()}",
                "retries": {"attempts": 1},
                "breaker": {"min_calls": 2, "failure_rate": 0.5, "open_ms": 600_000},
            },
        },
        "workers": [{"type": "routing"}],
    }


def _traced(
    request: pytest.FixtureRequest, bus: str, reflector: Reflector, receiver: OtlpReceiver
) -> Iterator[Traced]:
    workdir: Path = request.getfixturevalue("tmp_path_factory").mktemp(f"traced-{bus}")
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not 5 s
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }
    config = gateway_config(request, bus, reflector.url)
    with running_up(workdir, f"up-{bus}", config, env=env) as up:
        if bus == "kafka":
            wait_routed(f"{up.url}{PREFIX}/warm-up")
        yield Traced(up, receiver, bus)


@pytest.fixture(scope="module")
def traced_nats(
    request: pytest.FixtureRequest, reflector: Reflector, receiver: OtlpReceiver
) -> Iterator[Traced]:
    yield from _traced(request, "nats", reflector, receiver)


@pytest.fixture(scope="module")
def traced_kafka(
    request: pytest.FixtureRequest, reflector: Reflector, receiver: OtlpReceiver
) -> Iterator[Traced]:
    yield from _traced(request, "kafka", reflector, receiver)
