"""End-to-end fixtures: which bus a gateway runs on, and a scaled-out gateway
(two ingress nodes, two echo workers) started one role at a time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import (
    IngressNode,
    RelaygateRole,
    stop_all,
    wait_routed,
    write_config,
)

BUSES = [
    pytest.param("nats", marks=pytest.mark.nats, id="nats"),
    pytest.param("kafka", marks=pytest.mark.kafka, id="kafka"),
]


def bus_section(request: pytest.FixtureRequest, bus: str) -> dict[str, Any]:
    """`bus:` of a `relaygate up` config: the embedded NATS, or the session's Kafka."""
    if bus == "nats":
        return {}
    return {"url": request.getfixturevalue("kafka_url")}


def bus_url(request: pytest.FixtureRequest, bus: str) -> str:
    """A bus that outlives the gateway's processes: the session's NATS or Kafka."""
    if bus == "nats":
        url: str = request.getfixturevalue("nats_server").url
        return url
    url = request.getfixturevalue("kafka_url")
    return url


@dataclass
class Cluster:
    bus: str
    ingresses: list[IngressNode]
    workers: list[RelaygateRole]
    timeout_ms: int

    def processes(self) -> list[RelaygateRole]:
        return [*self.ingresses, *self.workers]


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Two `relaygate ingress` nodes and two `relaygate worker echo` replicas on a
    shared bus, route `/echo/{rest}`; parametrize indirectly with (bus, timeout_ms).
    A bus prefix of its own keeps it apart from other tests on the same broker."""
    bus, timeout_ms = request.param
    prefix = f"e2e-{uuid.uuid4().hex[:12]}"
    config_file = write_config(
        tmp_path / "cluster.yaml",
        {
            "bus": {"url": bus_url(request, bus), "prefix": prefix},
            "routes": [
                {
                    "name": "echo",
                    "when": {"path": "/echo/{rest:path}"},
                    "to": {"type": "worker", "topic": "echo"},
                    "timeout_ms": timeout_ms,
                }
            ],
        },
    )
    workers = [
        RelaygateRole(tmp_path, f"worker-{i}", config_file, ["worker", "echo", "--topic", "echo"])
        for i in (1, 2)
    ]
    ingresses = [IngressNode(tmp_path, f"ingress-{i}", config_file) for i in (1, 2)]
    started = Cluster(bus, ingresses, workers, timeout_ms)
    try:
        for process in started.processes():
            process.start()
        for process in started.processes():
            process.wait_ready()
        if bus == "kafka":
            for ingress in ingresses:
                wait_routed(f"{ingress.url}/echo/warm-up")
        yield started
    finally:
        codes = stop_all(started.processes())
    # A replica a test killed on purpose has no exit code to check.
    killed = {w.log_path.name for w in workers if w.proc is not None and w.proc.returncode == -9}
    bad = {name: code for name, code in codes.items() if code != 0 and name not in killed}
    assert not bad, f"exit codes after SIGTERM (want 0): {bad}"
