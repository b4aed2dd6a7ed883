"""`relaygate up` owns its children: SIGTERM stops every one of them before it exits 0,
and SIGKILL (no chance to clean up) still ends them, through PR_SET_PDEATHSIG."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import (
    IngressNode,
    RelaygateRole,
    RelaygateUp,
    tail,
    terminate,
    write_config,
)
from tests.support.processes import NatsServer
from tests.support.proctree import ProcInfo, descendants, describe, kill_leftovers, running

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

CONFIG = {
    "routes": [
        {
            "name": "echo",
            "when": {"path": "/echo/{rest:path}"},
            "to": {"type": "worker", "topic": "echo"},
        }
    ],
    "workers": [{"type": "echo", "topics": ["echo"], "replicas": 2}],
}


def _started(tmp_path: Path) -> tuple[RelaygateUp, list[ProcInfo]]:
    """A gateway that answers, and its process tree (nats-server, 2 workers, ingress)."""
    gateway = RelaygateUp(tmp_path, "up", CONFIG).start()
    try:
        gateway.wait_ready()
        assert httpx.get(f"{gateway.url}/echo/hi", timeout=10.0).status_code == 200
        children = descendants(gateway.pid)
    except BaseException:
        terminate(gateway)
        raise
    names = sorted(child.comm for child in children)
    assert len(children) == 4, names
    assert "nats-server" in names, names
    return gateway, children


def test_sigterm_stops_every_child_and_exits_0(tmp_path: Path) -> None:
    gateway, children = _started(tmp_path)
    try:
        code, seconds = terminate(gateway, timeout=15.0)

        assert code == 0, f"exit code {code} after {seconds:.1f}s:\n{tail(gateway.log())}"
        left = running(children)
        assert not left, f"still running after `relaygate up` exited:\n{describe(left)}"
    finally:
        kill_leftovers(children)


def test_sigkill_of_up_ends_its_children(tmp_path: Path) -> None:
    gateway, children = _started(tmp_path)
    try:
        gateway.kill()
        deadline = time.monotonic() + 10.0
        while running(children) and time.monotonic() < deadline:
            time.sleep(0.1)

        assert gateway.proc is not None
        assert gateway.proc.returncode == -signal.SIGKILL
        left = running(children)
        assert not left, (
            f"still running 10s after `relaygate up` was killed:\n{describe(left)}\n"
            f"log:\n{tail(gateway.log())}"
        )
    finally:
        kill_leftovers(children)


@pytest.mark.parametrize("role", ["worker", "ingress"])
def test_sigterm_stops_a_process_cleanly_after_its_nats_server_died(
    tmp_path: Path, role: str
) -> None:
    """What SIGKILL to `up` leads to: the bus and the other children get SIGTERM at
    once. A process whose bus is gone must still stop, with exit code 0."""
    nats = NatsServer(tmp_path).start()
    config_file = write_config(tmp_path / "config.yaml", {"bus": {"url": nats.url}})
    process: RelaygateRole = (
        RelaygateRole(tmp_path, "worker", config_file, ["worker", "echo"])
        if role == "worker"
        else IngressNode(tmp_path, "ingress", config_file)
    )
    process.start()
    try:
        process.wait_ready()
        nats.kill()
        time.sleep(0.2)  # it notices: disconnected, reconnecting

        code, seconds = terminate(process, timeout=10.0)

        assert code == 0, (
            f"relaygate {role}: exit code {code} {seconds:.1f}s after SIGTERM "
            f"(None: still running after 10s):\n{tail(process.log())}"
        )
    finally:
        process.stop()
        nats.stop()
