"""Service discovery for the routing worker: where an upstream's instances come from
when they change at run time (`upstreams.<name>.discovery`).

    static  the config's `url` / `targets` (the default; no loop runs)
    dns     A/AAAA or SRV records, resolved again by TTL          (dns.py)
    etcd    keys under a prefix, watched                          (etcd.py)
    bus     services announcing themselves with a TTL heartbeat   (bus.py, announce.py)

`UpstreamPool.start(bus)` runs the source in a `DiscoveryLoop`, which hands every new
instance set to `UpstreamPool.set_instances`: instances that stay keep their health,
ejections and requests in flight."""

from __future__ import annotations

from contracts.bus import Bus
from contracts.config import BusDiscovery, Discovery, DnsDiscovery, EtcdDiscovery
from workers.routing.discovery.base import (
    DiscoveryLoop,
    DiscoveryUnavailable,
    Source,
    Update,
    parse_instance,
)

__all__ = [
    "DiscoveryLoop",
    "DiscoveryUnavailable",
    "Source",
    "Update",
    "make_source",
    "parse_instance",
]


def make_source(upstream: str, discovery: Discovery, bus: Bus | None) -> Source | None:
    """The source an upstream's discovery config names; None for static lists."""
    if isinstance(discovery, DnsDiscovery):
        from workers.routing.discovery.dns import DnsSource

        return DnsSource(discovery)
    if isinstance(discovery, EtcdDiscovery):
        from workers.routing.discovery.etcd import EtcdSource

        return EtcdSource(upstream, discovery)
    if isinstance(discovery, BusDiscovery):
        from workers.routing.discovery.bus import bus_source

        return bus_source(upstream, discovery, bus)
    return None
