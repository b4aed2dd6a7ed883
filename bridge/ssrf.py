"""Server-side request forgery guard: webhook URLs may reach public addresses only.

A URL is checked when an endpoint is registered or changed (`check_url`), and again on
every connection: `GuardedResolver` checks every address a name resolves to, so a name
that later resolves to an internal address (DNS rebinding) is refused at connect time;
an address literal is checked again before each attempt. Refused: anything that is not
globally routable (loopback, RFC 1918, fc00::/7, link-local with the cloud metadata
address, 100.64.0.0/10, unspecified, reserved, documentation), multicast, and IPv4
addresses hidden in IPv6 (mapped, NAT64, 6to4). `allow_networks` lets chosen CIDRs
through. Decimal, hex, octal and short IPv4 forms (`2130706433`, `0x7f000001`,
`127.1`) are the addresses they stand for. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_RESOLVE_TIMEOUT_S = 5.0
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_NUMERIC_LABELS = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.I)


class UnsafeUrl(ValueError):
    """The URL may not be delivered to; the message says why."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


class AddressPolicy:
    """Which addresses webhooks may reach: public ones, and those in `allow`."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow: list[IPNetwork] = [ipaddress.ip_network(c, strict=False) for c in allow]

    def refusal(self, ip: IPAddress) -> str | None:
        """Why `ip` is refused, or None if it may be reached."""
        if any(ip.version == net.version and ip in net for net in self.allow):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            inner = _embedded_ipv4(ip)
            if inner is not None:
                why = self.refusal(inner)
                return None if why is None else f"{ip} embeds {inner}: {why}"
        if ip.is_multicast:
            return f"{ip} is a multicast address"
        if ip.is_unspecified:
            return f"{ip} is the unspecified address"
        if ip.is_loopback:
            return f"{ip} is a loopback address"
        if ip.is_link_local:
            return f"{ip} is link-local (cloud metadata lives there)"
        if not ip.is_global:
            return f"{ip} is not a public address"
        return None

    def check(self, ip: IPAddress) -> None:
        why = self.refusal(ip)
        if why is not None:
            raise UnsafeUrl(f"{why}; allow it with bridge.allow_networks if you mean it")


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host stands for when it is one: IPv6 in brackets, dotted quads,
    and the decimal/hex/octal/short IPv4 forms that resolvers accept."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_LABELS.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
        except OSError:
            raise UnsafeUrl(f"{host!r} is neither a host name nor an IPv4 address") from None
    return None


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or `UnsafeUrl`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl(f"scheme {parts.scheme or '(none)'!r} is refused: use http or https")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("credentials in the URL are refused: use a custom header")
    host = parts.hostname
    if not host:
        raise UnsafeUrl("the URL names no host")
    return scheme, host, port or (443 if scheme == "https" else 80)


async def check_url(url: str, policy: AddressPolicy) -> None:
    """Refuse `url` unless it is http(s) and every address its host resolves to is allowed."""
    _scheme, host, port = split_url(url)
    literal = literal_address(host)
    if literal is not None:
        policy.check(literal)
        return
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(_RESOLVE_TIMEOUT_S):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:  # an OSError too: first
        raise UnsafeUrl(f"{host!r} does not resolve within {_RESOLVE_TIMEOUT_S:.0f}s") from None
    except OSError as exc:
        raise UnsafeUrl(f"{host!r} does not resolve: {exc}") from None
    for info in infos:
        policy.check(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses a name if any address it resolves to is refused."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            why = self._policy.refusal(ipaddress.ip_address(result["host"].split("%", 1)[0]))
            if why is not None:
                raise OSError(errno.EACCES, f"{host} refused: {why}")
        return results

    async def close(self) -> None:
        await self._inner.close()
