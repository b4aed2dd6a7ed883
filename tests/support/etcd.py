"""A real etcd for discovery tests (Debian's etcd-server; `make test` installs it) on
free ports with a temporary data dir, and a small client of its v3 JSON gateway."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support.processes import ManagedProcess, free_port, wait_for_port


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdServer(ManagedProcess):
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError(
                "etcd not found: run `make deps-system` (apt-get install etcd-server)"
            )
        self.port = free_port()
        peer = free_port()
        data = workdir / f"etcd-{self.port}"
        data.mkdir(parents=True, exist_ok=True)
        client_url = f"http://127.0.0.1:{self.port}"
        peer_url = f"http://127.0.0.1:{peer}"
        super().__init__(
            [
                binary,
                "--name",
                "relaygate-test",
                "--data-dir",
                str(data),
                "--listen-client-urls",
                client_url,
                "--advertise-client-urls",
                client_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"relaygate-test={peer_url}",
                "--log-level",
                "warn",
            ],
            workdir / f"etcd-{self.port}.log",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EtcdServer:
        super().start()
        wait_for_port(self.port, proc=self.proc)
        return self

    # ------------------------------------------------------------ v3 gateway client

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = httpx.post(f"{self.url}{path}", content=orjson.dumps(body), timeout=5)
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data

    def put(self, key: str, value: str | dict[str, Any], lease: int | None = None) -> None:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(text)}
        if lease is not None:
            body["lease"] = str(lease)
        self._call("/v3/kv/put", body)

    def delete(self, key: str) -> None:
        self._call("/v3/kv/deleterange", {"key": _b64(key)})

    def grant(self, ttl_s: int) -> int:
        return int(self._call("/v3/lease/grant", {"TTL": str(ttl_s)})["ID"])

    def keepalive(self, lease: int) -> None:
        self._call("/v3/lease/keepalive", {"ID": str(lease)})
