"""TLS termination: the server's SSLContext, a reloader that puts a renewed certificate
in place for new handshakes, and what a request learns about its TLS connection (the
ASGI TLS extension: https://asgi.readthedocs.io/en/latest/extensions.html#tls)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from contracts.config import ConfigError, TlsConfig
from contracts.envelope import Principal
from ingress.request import client_subject

log = logging.getLogger("relaygate.ingress")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
# The extension's tls_version is the protocol's wire number.
_WIRE_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}

FileStamp = tuple[int, int, int] | None


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """The data plane's context; a file that cannot be used is a `ConfigError`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "ingress.tls",
            [f"cert_file {tls.cert_file} / key_file {tls.key_file}: cannot load: {_reason(exc)}"],
        ) from None
    if tls.client_auth != "none":
        assert tls.client_ca_file is not None  # the model requires it
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "ingress.tls", [f"client_ca_file {tls.client_ca_file}: cannot load: {_reason(exc)}"]
            ) from None
        context.verify_mode = _VERIFY[tls.client_auth]
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


def _stamp(path: Path) -> FileStamp:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class CertificateReloader:
    """Polls the certificate, key and client CA files. A changed certificate/key pair is
    tried on a scratch context first, so a half-written or mismatched pair never
    replaces a working one; then loaded into the live context, which every new
    handshake uses. Connections already open keep their session."""

    def __init__(self, context: ssl.SSLContext, tls: TlsConfig) -> None:
        self.context = context
        self.tls = tls
        self.reloads = 0
        self._pair = self._pair_stamp()
        self._refused_pair: tuple[FileStamp, FileStamp] | None = None
        self._ca = _stamp(tls.client_ca_file) if tls.client_ca_file else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _pair_stamp(self) -> tuple[FileStamp, FileStamp]:
        return _stamp(self.tls.cert_file), _stamp(self.tls.key_file)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timer = loop.call_later(self.tls.reload_interval_s, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        assert self._loop is not None
        try:
            self.check()
        finally:
            self._timer = self._loop.call_later(self.tls.reload_interval_s, self._tick)

    def check(self) -> bool:
        """Load what changed on disk; True when the certificate was replaced."""
        tls = self.tls
        if tls.client_ca_file is not None and tls.client_auth != "none":
            ca = _stamp(tls.client_ca_file)
            if ca != self._ca and ca is not None:
                try:
                    self.context.load_verify_locations(cafile=tls.client_ca_file)
                    self._ca = ca
                    log.info(
                        "TLS client CAs reloaded from %s (CAs removed from the file stay "
                        "trusted until a restart)",
                        tls.client_ca_file,
                    )
                except (OSError, ssl.SSLError) as exc:
                    log.warning("TLS client CAs not reloaded: %s", _reason(exc))
        pair = self._pair_stamp()
        if pair == self._pair or None in pair:
            return False
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tls.cert_file, tls.key_file)
            self.context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            # Usually the pair caught between its two writes; the next tick retries.
            if pair != self._refused_pair:
                self._refused_pair = pair
                log.warning(
                    "TLS certificate not reloaded, keeping the current one: %s", _reason(exc)
                )
            return False
        self._pair = pair
        self.reloads += 1
        log.info("TLS certificate reloaded from %s and %s", tls.cert_file, tls.key_file)
        return True


def connection_info(transport: asyncio.BaseTransport) -> dict[str, Any]:
    """The ASGI TLS extension's fields for one connection; a verified client
    certificate's subject is `client_cert_name`, an RFC 4514 string."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return {}
    peer = ssl_object.getpeercert()  # {} unless a client certificate was verified
    der = ssl_object.getpeercert(binary_form=True) if peer else None
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": rfc4514_name(peer["subject"]) if peer else None,
        "client_cert_error": None,
        "tls_version": _WIRE_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


def mtls_principal(scope: MutableMapping[str, Any]) -> Principal | None:
    """The caller as its verified client certificate names it (authmethod `mtls`), for a
    request nothing else authenticated; None on a connection without one."""
    subject = client_subject(scope)
    return Principal(subject=subject, authmethod="mtls") if subject else None


def rfc4514_name(subject: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    """`ssl`'s parsed subject (most general RDN first) as RFC 4514 (most specific first)."""
    return ",".join(
        "+".join(f"{_SHORT_NAMES.get(key, key)}={_escape(value)}" for key, value in rdn)
        for rdn in reversed(subject)
    )


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if out.startswith(("#", " ")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out
