"""DNS discovery: A/AAAA records (one instance per address, on the configured port) or
SRV records (host, port, priority -> failover group, weight -> balancing weight),
resolved again when the answer's TTL runs out, kept between `min_ttl_s` and `max_ttl_s`.

An authoritative "no such name" or "no records" empties the upstream (requests get 503
upstream-no-healthy-instance); a timeout or a server failure keeps the last instances."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from contracts.config import DnsDiscovery, UpstreamInstance
from workers.routing.discovery.base import DiscoveryUnavailable, Source, Update

log = logging.getLogger("relaygate.routing.discovery")

# How long to wait before asking again about a name that does not exist (yet).
_NEGATIVE_TTL_S = 5.0


class DnsSource(Source):
    kind = "dns"

    def __init__(self, options: DnsDiscovery) -> None:
        self._options = options
        resolver = dns.asyncresolver.Resolver(configure=options.nameservers is None)
        if options.nameservers is not None:
            resolver.nameservers = list(options.nameservers)
        resolver.port = options.nameserver_port
        resolver.lifetime = options.timeout_ms / 1000
        resolver.timeout = options.timeout_ms / 1000
        resolver.cache = None
        self._resolver = resolver

    def describe(self) -> str:
        return f"{self._options.record} {self._options.name}"

    async def watch(self, update: Update) -> None:
        options = self._options
        last: list[UpstreamInstance] | None = None
        while True:
            instances, ttl = await self.resolve()
            if instances != last:
                update(instances)
                last = instances
            await asyncio.sleep(min(max(ttl, options.min_ttl_s), options.max_ttl_s))

    async def resolve(self) -> tuple[list[UpstreamInstance], float]:
        """The instances and how long the answer stays good (seconds)."""
        options = self._options
        if options.record == "SRV":
            return await self._resolve_srv()
        kinds = ("A", "AAAA") if options.record == "A+AAAA" else (options.record,)
        assert options.port is not None  # the config requires it for A/AAAA
        found: list[UpstreamInstance] = []
        ttls: list[float] = []
        for kind in kinds:
            addresses, ttl = await self._addresses(options.name, kind)
            found += [self._instance(address, options.port) for address in addresses]
            ttls.append(ttl)
        return found, min(ttls)

    async def _resolve_srv(self) -> tuple[list[UpstreamInstance], float]:
        answer = await self._query(self._options.name, "SRV")
        if answer is None:
            return [], _NEGATIVE_TTL_S
        assert answer.rrset is not None
        ttl = float(answer.rrset.ttl)
        records = sorted(answer.rrset, key=lambda r: (r.priority, -r.weight, str(r.target)))
        # Priorities become failover groups 0, 1, ... in order, whatever their values.
        groups = {p: n for n, p in enumerate(sorted({r.priority for r in records}))}
        found: list[UpstreamInstance] = []
        for record in records:
            target = record.target.to_text(omit_final_dot=True)
            if not target or target == ".":  # RFC 2782: "decidedly not available"
                continue
            addresses, host_ttl = await self._host_addresses(target)
            ttl = min(ttl, host_ttl)
            found += [
                self._instance(address, record.port, groups[record.priority], record.weight)
                for address in addresses
            ]
        return found, ttl

    async def _host_addresses(self, host: str) -> tuple[list[str], float]:
        try:
            return [str(ipaddress.ip_address(host))], float("inf")
        except ValueError:
            pass
        addresses, ttl = await self._addresses(host, "A")
        if not addresses:
            addresses, ttl = await self._addresses(host, "AAAA")
        return addresses, ttl

    async def _addresses(self, name: str, kind: str) -> tuple[list[str], float]:
        answer = await self._query(name, kind)
        if answer is None or answer.rrset is None:
            return [], _NEGATIVE_TTL_S
        return sorted(r.address for r in answer.rrset), float(answer.rrset.ttl)

    async def _query(self, name: str, kind: str) -> dns.resolver.Answer | None:
        """The answer; None when the name or the record type does not exist."""
        try:
            return await self._resolver.resolve(
                name, dns.rdatatype.from_text(kind), search=False, raise_on_no_answer=True
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.Timeout as exc:
            raise DiscoveryUnavailable(f"{kind} {name}: no answer in time") from exc
        except dns.resolver.NoNameservers as exc:
            raise DiscoveryUnavailable(f"{kind} {name}: every nameserver failed") from exc
        except dns.exception.DNSException as exc:
            raise DiscoveryUnavailable(f"{kind} {name}: {exc}") from exc

    def _instance(
        self, address: str, port: int, group: int = 0, weight: int = 1
    ) -> UpstreamInstance:
        host = f"[{address}]" if ":" in address else address
        return UpstreamInstance(
            url=f"{self._options.scheme}://{host}:{port}{self._options.base_path}",
            group=group,
            weight=max(weight, 1),  # SRV weight 0: "very small chance"; we give it 1
        )
