"""Certificates for TLS tests (trustme): a server certificate for localhost and
127.0.0.1, client certificates, and their files written the way an operator replaces
them (a temporary file renamed over the old one)."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class ServerFiles:
    cert_file: Path
    key_file: Path

    def install(self, cert: trustme.LeafCert) -> None:
        """Write `cert` and its key over the files, each replaced atomically."""
        _replace(self.key_file, cert.private_key_pem.bytes())
        _replace(self.cert_file, b"".join(pem.bytes() for pem in cert.cert_chain_pems))


def _replace(path: Path, data: bytes) -> None:
    scratch = path.with_name(path.name + ".new")
    scratch.write_bytes(data)
    os.replace(scratch, path)


def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", "127.0.0.1")


def server_files(folder: Path, cert: trustme.LeafCert) -> ServerFiles:
    files = ServerFiles(folder / "server.pem", folder / "server.key")
    files.install(cert)
    return files


def ca_file(folder: Path, ca: trustme.CA, name: str) -> Path:
    path = folder / name
    ca.cert_pem.write_to_path(str(path))
    return path


def client_context(
    trusted: trustme.CA, certificate: trustme.LeafCert | None = None
) -> ssl.SSLContext:
    """A client trusting `trusted` for the server, presenting `certificate` if given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    trusted.configure_trust(context)
    if certificate is not None:
        certificate.configure_cert(context)
    return context
