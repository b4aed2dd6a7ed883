"""SIGHUP reloads the routes of a running ingress; a broken file changes nothing."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ManagedProcess, NatsServer, free_port, wait_for_port

ROUTE = """
  - name: {name}
    when: {{path: /{name}}}
    to: {{type: worker, topic: {name}}}
"""


def _config(nats_url: str, port: int, admin_port: int, *names: str) -> str:
    routes = "".join(ROUTE.format(name=n) for n in names)
    return (
        f"bus: {{url: '{nats_url}'}}\n"
        f"ingress: {{port: {port}}}\nadmin: {{port: {admin_port}}}\nroutes:{routes or ' []'}\n"
    )


def _wait_status(url: str, expected: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = httpx.get(url).status_code
        if status == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url}: status {status}, expected {expected}")


@pytest.mark.nats
def test_sighup_swaps_routes_and_a_bad_file_is_refused(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    port, admin_port = free_port(), free_port()
    config = tmp_path / "relaygate.yaml"
    config.write_text(_config(nats_server.url, port, admin_port, "alpha"))
    ingress = ManagedProcess(
        [sys.executable, "-m", "deploy", "ingress", "--config", str(config)],
        tmp_path / "ingress.log",
    ).start()
    try:
        wait_for_port(port, proc=ingress.proc)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/alpha").status_code == 503  # route exists, no worker
        assert httpx.get(f"{base}/beta").status_code == 404

        config.write_text(_config(nats_server.url, port, admin_port, "alpha", "beta"))
        ingress.signal(signal.SIGHUP)
        _wait_status(f"{base}/beta", 503)

        config.write_text("routes:\n  - name: beta\n    to: {type: worker}\n")
        ingress.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        # One line per problem, written by the log thread: wait for the last one.
        while "field required" not in ingress.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "reload refused, keeping the running config" in ingress.log()
        assert "routes[0].to.topic: field required" in ingress.log()
        assert httpx.get(f"{base}/beta").status_code == 503  # still the good config
        assert [
            r["name"] for r in httpx.get(f"http://127.0.0.1:{admin_port}/config").json()["routes"]
        ] == ["alpha", "beta"]
    finally:
        assert ingress.stop() == 0, ingress.log()
