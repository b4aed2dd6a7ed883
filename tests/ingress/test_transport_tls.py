"""TLS termination on the real data plane on a real port: HTTPS, mutual TLS with the
client certificate's subject in the request scope, a certificate replaced on disk and
served without a restart, and the HTTP-to-HTTPS redirect listener."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from contracts.config import ConfigError, IngressConfig
from ingress.app import Receive, Scope
from ingress.responses import Send
from ingress.transport import Transport, client_subject, mtls_principal
from ingress.transport.tls import rfc4514_name
from tests.support.live_ingress import LiveIngress, exchange, live_ingress, statuses
from tests.support.pki import ServerFiles, ca_file, client_context, server_cert, server_files

SUBJECT = "CN=orders-service,OU=payments,O=Example\\, Inc."
CLOSE = b"Host: localhost\r\nConnection: close\r\n\r\n"


@dataclass
class Pki:
    folder: Path
    server_ca: trustme.CA
    client_ca: trustme.CA
    client: trustme.LeafCert  # signed by client_ca
    rogue: trustme.LeafCert  # same subject, signed by a CA nobody trusts
    files: ServerFiles
    client_ca_file: Path

    def tls(self, **options: Any) -> dict[str, Any]:
        return {
            "cert_file": str(self.files.cert_file),
            "key_file": str(self.files.key_file),
            "client_ca_file": str(self.client_ca_file),
            **options,
        }


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    return Pki(
        tmp_path,
        server_ca,
        client_ca,
        _client_cert(client_ca),
        _client_cert(trustme.CA()),
        server_files(tmp_path, server_cert(server_ca)),
        ca_file(tmp_path, client_ca, "clients.pem"),
    )


def _client_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert(
        "orders.example",
        common_name="orders-service",
        organization_name="Example, Inc.",
        organization_unit_name="payments",
    )


async def _whoami(scope: Scope, receive: Receive, send: Send) -> None:
    """A data-plane endpoint answering what the scope says about the connection."""
    principal = mtls_principal(scope)
    body = json.dumps(
        {
            "scheme": scope["scheme"],
            "subject": client_subject(scope),
            "principal": [principal.subject, principal.authmethod] if principal else None,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _get(
    live: LiveIngress, path: bytes, context: ssl.SSLContext | None, port: int | None = None
) -> bytes:
    raw = b"GET " + path + b" HTTP/1.1\r\n" + CLOSE
    return await asyncio.to_thread(exchange, port or live.port, raw, tls=context, timeout=5.0)


def _json(reply: bytes) -> MutableMapping[str, Any]:
    loaded: MutableMapping[str, Any] = json.loads(reply.partition(b"\r\n\r\n")[2])
    return loaded


async def test_https_serves_the_data_plane_and_requests_say_https(pki: Pki) -> None:
    async with live_ingress({"tls": pki.tls()}) as live:
        reply = await _get(live, b"/echo/secure", client_context(pki.server_ca))
        assert statuses(reply) == [200]
        assert [r.http.scheme for r in live.seen] == ["https"]
        # Plain HTTP on the TLS port is no request at all.
        plain = await asyncio.to_thread(
            exchange, live.port, b"GET /echo/plain HTTP/1.1\r\n" + CLOSE, timeout=2.0
        )
        assert statuses(plain) == []
        assert live.paths == ["/echo/secure"]


async def test_mtls_required_serves_a_trusted_client_and_shows_its_subject(pki: Pki) -> None:
    async with live_ingress({"tls": pki.tls(client_auth="required")}) as live:
        live.app.endpoints["/whoami"] = _whoami
        reply = await _get(live, b"/whoami", client_context(pki.server_ca, pki.client))
        assert statuses(reply) == [200]
        assert _json(reply) == {
            "scheme": "https",
            "subject": SUBJECT,
            "principal": [SUBJECT, "mtls"],
        }


@pytest.mark.parametrize("client", ["none", "untrusted"])
async def test_mtls_required_refuses_a_client_without_a_trusted_certificate(
    pki: Pki, client: str
) -> None:
    certificate = None if client == "none" else pki.rogue
    async with live_ingress({"tls": pki.tls(client_auth="required")}) as live:
        reply = await _get(live, b"/echo/x", client_context(pki.server_ca, certificate))
        assert statuses(reply) == []
        assert live.seen == []


async def test_mtls_optional_serves_clients_with_and_without_a_certificate(pki: Pki) -> None:
    async with live_ingress({"tls": pki.tls(client_auth="optional")}) as live:
        live.app.endpoints["/whoami"] = _whoami
        anonymous = await _get(live, b"/whoami", client_context(pki.server_ca))
        assert _json(anonymous)["subject"] is None
        assert _json(anonymous)["principal"] is None
        known = await _get(live, b"/whoami", client_context(pki.server_ca, pki.client))
        assert _json(known)["subject"] == SUBJECT
        # A certificate that does not verify is refused, not taken as anonymous.
        rogue = await _get(live, b"/whoami", client_context(pki.server_ca, pki.rogue))
        assert statuses(rogue) == []


async def test_a_certificate_replaced_on_disk_is_served_without_a_restart(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "relaygate.ingress")
    async with live_ingress({"tls": pki.tls(reload_interval_s=0.1)}) as live:
        old_trust = client_context(pki.server_ca)
        assert statuses(await _get(live, b"/echo/before", old_trust)) == [200]
        new_ca = trustme.CA()
        renewed = server_cert(new_ca)
        pki.files.install(renewed)
        new_trust = client_context(new_ca)
        deadline = time.monotonic() + 5
        while statuses(await _get(live, b"/echo/after", new_trust)) != [200]:
            assert time.monotonic() < deadline, "the new certificate was not picked up"
            await asyncio.sleep(0.05)
        # New handshakes get the new certificate only: the old CA no longer verifies it.
        assert statuses(await _get(live, b"/echo/old-trust", old_trust)) == []
        assert "TLS certificate reloaded" in caplog.text

        # A certificate whose key does not match is not loaded: the renewed one stays.
        mismatched = server_cert(trustme.CA())
        pki.files.cert_file.write_bytes(mismatched.cert_chain_pems[0].bytes())
        await asyncio.sleep(0.4)
        assert statuses(await _get(live, b"/echo/still", new_trust)) == [200]
        assert "TLS certificate not reloaded, keeping the current one" in caplog.text
        assert live.transport.reloader is not None
        assert live.transport.reloader.reloads == 1


async def test_the_redirect_listener_answers_308_to_https(pki: Pki) -> None:
    async with live_ingress({"tls": pki.tls(redirect_port=0, public_port=8443)}) as live:
        assert live.redirect_port is not None
        raw = b"POST /echo/x?a=1&b=%20 HTTP/1.1\r\nHost: api.example.com:8080\r\n"
        reply = await asyncio.to_thread(
            exchange,
            live.redirect_port,
            raw + b"Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        assert statuses(reply) == [308]
        assert b"\r\nlocation: https://api.example.com:8443/echo/x?a=1&b=%20\r\n" in reply
        bad = await asyncio.to_thread(
            exchange,
            live.redirect_port,
            b"GET / HTTP/1.1\r\nHost: evil.example/@x\r\nConnection: close\r\n\r\n",
        )
        assert statuses(bad) == [400]
        assert live.seen == []


def test_unusable_tls_files_stop_the_node_with_one_clear_error(pki: Pki) -> None:
    missing = IngressConfig(tls=pki.tls(cert_file=str(pki.folder / "nope.pem")))
    with pytest.raises(ConfigError) as caught:
        Transport(missing)
    assert caught.value.problems[0].startswith(f"cert_file {pki.folder / 'nope.pem'}")
    swapped = IngressConfig(tls=pki.tls(cert_file=str(pki.client_ca_file)))
    with pytest.raises(ConfigError, match="cannot load"):
        Transport(swapped)


def test_client_auth_needs_a_client_ca() -> None:
    with pytest.raises(ValueError, match="client_auth required needs client_ca_file"):
        IngressConfig(tls={"cert_file": "c.pem", "key_file": "k.pem", "client_auth": "required"})


@pytest.mark.parametrize(
    ("subject", "name"),
    [
        (((("commonName", "svc"),),), "CN=svc"),
        (
            ((("countryName", "DE"),), (("organizationName", "A+B; C"),), (("commonName", "x"),)),
            "CN=x,O=A\\+B\\; C,C=DE",
        ),
        (((("commonName", "#lead "),),), "CN=\\#lead\\ "),
        (((("commonName", "a"), ("userId", "7")),), "CN=a+UID=7"),
    ],
)
def test_certificate_subjects_are_written_as_rfc_4514(
    subject: tuple[tuple[tuple[str, str], ...], ...], name: str
) -> None:
    assert rfc4514_name(subject) == name


def _silent_connection_closed_after(port: int, limit_s: float) -> float:
    """Connect and say nothing (no ClientHello): seconds until the server hangs up."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(limit_s)
        try:
            while sock.recv(4096):
                pass
        except TimeoutError:
            pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


async def test_a_client_that_never_finishes_its_handshake_is_cut_off(pki: Pki) -> None:
    limits = {"header_timeout_s": 0.5}
    async with live_ingress({"tls": pki.tls(), "limits": limits}) as live:
        closed_after = await asyncio.to_thread(_silent_connection_closed_after, live.port, 5.0)
        assert 0.3 <= closed_after < 2.0
        await asyncio.sleep(0.05)
        assert live.transport.guard.per_address == {}


async def test_connections_still_in_their_handshake_count_against_the_address_cap(
    pki: Pki,
) -> None:
    limits = {"max_connections_per_address": 2}
    async with live_ingress({"tls": pki.tls(), "limits": limits}) as live:
        silent = [socket.create_connection(("127.0.0.1", live.port)) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert live.transport.guard.per_address == {"127.0.0.1": 2}
        trust = client_context(pki.server_ca)
        assert statuses(await _get(live, b"/echo/refused", trust)) == []
        for sock in silent:
            sock.close()
        await asyncio.sleep(0.1)
        assert live.transport.guard.per_address == {}
        assert statuses(await _get(live, b"/echo/admitted", trust)) == [200]
        # A failed handshake gives its slot back too.
        plain = await asyncio.to_thread(
            exchange, live.port, b"GET /echo/plain HTTP/1.1\r\n" + CLOSE, timeout=2.0
        )
        assert plain == b""
        await asyncio.sleep(0.1)
        assert live.transport.guard.per_address == {}
        assert live.paths == ["/echo/admitted"]


async def test_a_verified_client_certificate_becomes_the_principal_workers_see(pki: Pki) -> None:
    async with live_ingress({"tls": pki.tls(client_auth="optional")}) as live:
        with_cert = await _get(live, b"/echo/mine", client_context(pki.server_ca, pki.client))
        without = await _get(live, b"/echo/anyone", client_context(pki.server_ca))
        assert statuses(with_cert) == [200]
        assert statuses(without) == [200]
        principals = [r.principal for r in live.seen]
        assert principals[0] is not None
        assert (principals[0].subject, principals[0].authmethod) == (SUBJECT, "mtls")
        assert principals[1] is None
