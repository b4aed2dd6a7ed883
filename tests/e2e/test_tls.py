"""`relaygate up` terminating TLS as a user runs it (uvloop, subprocesses, embedded NATS):
HTTPS to a worker, the HTTP-to-HTTPS redirect listener, a renewed certificate served
without a restart, and malformed framing refused over TLS before any worker sees it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from tests.support.gateway import RelaygateUp, running_up, wait_until
from tests.support.live_ingress import exchange, statuses
from tests.support.pki import ServerFiles, client_context, server_cert, server_files
from tests.support.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.nats]


@dataclass
class TlsGateway:
    up: RelaygateUp
    files: ServerFiles
    ca: trustme.CA
    redirect_port: int

    @property
    def url(self) -> str:
        return f"https://localhost:{self.up.port}"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsGateway]:
    workdir = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    files = server_files(workdir, server_cert(ca))
    redirect_port = free_port()
    config = {
        "ingress": {
            "tls": {
                "cert_file": str(files.cert_file),
                "key_file": str(files.key_file),
                "reload_interval_s": 0.2,
                "redirect_port": redirect_port,
            }
        },
        "routes": [
            {
                "name": "echo",
                "when": {"path": "/echo/{rest:path}"},
                "to": {"type": "worker", "topic": "echo"},
            }
        ],
        "workers": [{"type": "echo"}],
    }
    with running_up(workdir, "up-tls", config) as up:
        yield TlsGateway(up, files, ca, redirect_port)


async def test_https_reaches_the_worker(gateway: TlsGateway) -> None:
    async with httpx.AsyncClient(verify=client_context(gateway.ca)) as client:
        response = await client.post(f"{gateway.url}/echo/hello", content=b"over tls")
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["body"] == "over tls"
    assert echoed["route"] == "echo"


async def test_plain_http_on_the_redirect_port_gets_308_to_https(gateway: TlsGateway) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"http://127.0.0.1:{gateway.redirect_port}/echo/a?b=1",
            headers={"host": "localhost"},
        )
    assert response.status_code == 308
    assert response.headers["location"] == f"https://localhost:{gateway.up.port}/echo/a?b=1"


async def test_a_malformed_chunked_body_over_tls_is_refused(gateway: TlsGateway) -> None:
    raw = (
        b"POST /echo/smuggle HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nab\r\n0\r\n\r\n"
    )
    reply = await asyncio.to_thread(exchange, gateway.up.port, raw, tls=client_context(gateway.ca))
    assert statuses(reply) == [400]
    assert b"application/problem+json" in reply


async def test_a_renewed_certificate_is_served_without_a_restart(
    gateway: TlsGateway, tmp_path: Path
) -> None:
    renewed_ca = trustme.CA()
    gateway.files.install(server_cert(renewed_ca))
    deadline = time.monotonic() + 10
    while True:
        try:
            async with httpx.AsyncClient(verify=client_context(renewed_ca)) as client:
                response = await client.get(f"{gateway.url}/echo/renewed")
            break
        except httpx.ConnectError:
            assert time.monotonic() < deadline, "the renewed certificate was not served"
            await asyncio.sleep(0.1)
    assert response.status_code == 200
    # Log lines reach the file through the log writer thread, a few ms after the event.
    wait_until(lambda: "TLS certificate reloaded" in gateway.up.log(), 5, "the reload log line")
