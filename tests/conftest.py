"""Shared fixtures: real brokers on free ports, owned by the test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import NatsServer, RedisServer, kafka_bus_url


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("procs")


@pytest.fixture(scope="session")
def nats_server(workdir: Path) -> Iterator[NatsServer]:
    """One nats-server for the session; tests that kill it start their own."""
    server = NatsServer(workdir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_url(workdir: Path) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS when set (an Apache Kafka), else a Tansu broker we start."""
    yield from kafka_bus_url(workdir)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, so that the test may kill and restart it."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
