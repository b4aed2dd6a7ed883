"""A real DNS server for discovery tests: dnslib's UDP server on a free port of
127.0.0.1, answering from a zone the test changes while it runs.

    with LocalDns() as dns:
        dns.set("orders.test", "A", ["127.0.0.1"], ttl=1)
        dns.set("_http._tcp.orders.test", "SRV", [(10, 5, 8001, "host1.test")])
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, SRV, A, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


class _Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], tuple[list[Any], int]] = {}
        self.queries: dict[str, int] = {}
        self.lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        kind = QTYPE[request.q.qtype]
        with self.lock:
            self.queries[name] = self.queries.get(name, 0) + 1
            found = self.records.get((name, kind))
            known = any(n == name for n, _ in self.records)
        if found is None:
            if not known:
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        values, ttl = found
        for value in values:
            reply.add_answer(RR(request.q.qname, QTYPE.reverse[kind], rdata=value, ttl=ttl))
        return reply


class LocalDns:
    def __init__(self) -> None:
        self._zone = _Zone()
        self.port = _free_udp_port()
        self._server = DNSServer(
            self._zone,
            port=self.port,
            address="127.0.0.1",
            logger=DNSLogger(logf=lambda _line: None),
        )

    def __enter__(self) -> LocalDns:
        self._server.start_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server.isAlive():
            self._server.stop()
            self._server.server.server_close()

    def queries(self, name: str) -> int:
        """How many questions about `name` the server answered."""
        return self._zone.queries.get(name.lower(), 0)

    def set(self, name: str, kind: str, values: list[Any], ttl: int = 1) -> None:
        """Replace the `kind` records of `name`: addresses for A/AAAA, (priority, weight,
        port, target) for SRV; an empty list leaves the name with no such records."""
        rdata: list[Any]
        if kind == "A":
            rdata = [A(v) for v in values]
        elif kind == "AAAA":
            rdata = [AAAA(v) for v in values]
        elif kind == "SRV":
            rdata = [
                SRV(priority=p, weight=w, port=port, target=DNSLabel(t)) for p, w, port, t in values
            ]
        else:
            raise ValueError(kind)
        with self._zone.lock:
            self._zone.records[(name.lower(), kind)] = (rdata, ttl)

    def remove(self, name: str) -> None:
        """The name stops existing (NXDOMAIN)."""
        with self._zone.lock:
            for key in [k for k in self._zone.records if k[0] == name.lower()]:
                del self._zone.records[key]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
