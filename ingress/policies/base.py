"""What an edge policy sees (`RequestContext`) and says (`Verdict`).

A route's policies are built once per config and run in order before the request
is published; the first rejection answers the client and nothing reaches the bus."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from contracts.config import Config
from contracts.envelope import Principal, first_header
from ingress.request import Refused


@dataclass(slots=True)
class RequestContext:
    route: str
    method: str
    path: str
    headers: list[tuple[str, str]]
    client_ip: str
    tier: str | None
    principal: Principal | None = None

    def header(self, name: str) -> str | None:
        return first_header(self.headers, name)

    def authenticate(self, principal: Principal) -> None:
        """An authentication policy's result: it goes into the envelope, and its tier
        (when it names one) replaces the tier guessed from headers or the address."""
        if principal.tier:
            self.tier = principal.tier
        else:
            principal.tier = self.tier
        self.principal = principal


@dataclass(slots=True)
class Verdict:
    """`rejection` set: answer it. Either way, `headers` go on the response."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    rejection: Refused | None = None


EdgePolicy = Callable[[RequestContext], Awaitable[Verdict]]


class TierResolver:
    """The caller's tier: the principal's, else the tier header, else its network, else
    the default (see `caller` in the config)."""

    def __init__(self, config: Config) -> None:
        caller = config.caller
        self.header = caller.tier_header.lower() if caller.tier_header else None
        self.default = caller.default_tier
        self.tiers = frozenset(config.tiers)
        self.networks = [
            (ipaddress.ip_network(cidr, strict=False), tier)
            for cidr, tier in caller.networks.items()
        ]

    def __call__(
        self, principal: Principal | None, headers: list[tuple[str, str]], client_ip: str
    ) -> str | None:
        if principal is not None and principal.tier:
            return principal.tier
        if self.header is not None:
            for key, value in headers:
                if key == self.header and value in self.tiers:
                    return value
        if self.networks and client_ip:
            try:
                address = ipaddress.ip_address(client_ip)
            except ValueError:
                address = None
            if address is not None:
                for network, tier in self.networks:
                    if address in network:
                        return tier
        return self.default
