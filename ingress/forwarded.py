"""Who the client is behind our own proxies: `Forwarded` / `X-Forwarded-For` are
believed only from a direct peer in `caller.trusted_proxies`, walked right to left
past the trusted hops, so that an address a client writes itself is never taken."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import NamedTuple


class Address(NamedTuple):
    version: int  # 4 or 6
    value: int
    text: str  # without port or brackets; IPv4-mapped ones as IPv4


def parse_address(text: str) -> Address | None:
    """An address as proxies write it (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `"::1"`),
    IPv4-mapped IPv6 as IPv4; None when it is not one (`unknown`, `_hidden`). Parsed
    with inet_pton: the ipaddress module costs several microseconds a call."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return Address(4, int.from_bytes(socket.inet_pton(socket.AF_INET, text)), text)
    except OSError:
        pass
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text))
    except OSError:
        return None
    if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d
        value &= 0xFFFFFFFF
        return Address(4, value, socket.inet_ntop(socket.AF_INET, value.to_bytes(4)))
    return Address(6, value, text)


class Networks:
    """CIDRs as (network, mask) integers, split by IP version."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        networks = [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]
        self.v4 = tuple(
            (int(n.network_address), int(n.netmask)) for n in networks if n.version == 4
        )
        self.v6 = tuple(
            (int(n.network_address), int(n.netmask)) for n in networks if n.version == 6
        )

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __contains__(self, address: Address) -> bool:
        value = address.value
        networks = self.v4 if address.version == 4 else self.v6
        return any(value & mask == network for network, mask in networks)


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = Networks(cidrs)

    def resolve(self, peer: str, scheme: str, headers: list[tuple[str, str]]) -> tuple[str, str]:
        """(client address, scheme) for a request from `peer`."""
        address = parse_address(peer)
        if address is None or address not in self.networks:
            return peer, scheme
        forwarded: list[str] = []
        forwarded_for: list[str] = []
        proto = None
        for name, value in headers:
            if name == "forwarded":
                forwarded.extend(value.split(","))
            elif name == "x-forwarded-for":
                forwarded_for.extend(value.split(","))
            elif name == "x-forwarded-proto":
                proto = value.rsplit(",", 1)[-1].strip().lower()
        if forwarded:
            hops, proto = _forwarded_elements(forwarded)
        else:
            hops = forwarded_for
        client = address
        for hop in reversed(hops):
            parsed = parse_address(hop)
            if parsed is None:
                break  # `unknown` or garbage: the nearest proxy is what we know
            client = parsed
            if parsed not in self.networks:
                break
        if proto not in ("http", "https"):
            proto = scheme
        return client.text, proto


def _forwarded_elements(elements: list[str]) -> tuple[list[str], str | None]:
    """RFC 7239: the `for=` of each element, and the `proto=` of the last one."""
    hops: list[str] = []
    proto = None
    for element in elements:
        proto = None
        for pair in element.split(";"):
            key, _, value = pair.strip().partition("=")
            key = key.lower()
            if key == "for":
                hops.append(value)
            elif key == "proto":
                proto = value.strip('"').lower()
    return hops, proto
