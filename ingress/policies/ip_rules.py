"""`ip_rules`: client address allow and deny lists, IPv4 and IPv6; deny wins. The
address is `RequestContext.client_ip`, which only a trusted proxy can change."""

from __future__ import annotations

from contracts.config import IpRulesPolicy
from ingress.forwarded import Networks, parse_address
from ingress.policies.base import RequestContext, Verdict
from ingress.request import Refused

_PASS = Verdict()


class IpRules:
    def __init__(self, spec: IpRulesPolicy) -> None:
        self.allow = Networks(spec.allow)
        self.deny = Networks(spec.deny)

    async def __call__(self, ctx: RequestContext) -> Verdict:
        address = parse_address(ctx.client_ip)
        if address is None:  # no address (a Unix socket): only a deny-only rule passes it
            if self.allow:
                return _refused(ctx, "the client address is unknown")
            return _PASS
        if address in self.deny:
            return _refused(ctx, f"client address {address.text} is denied")
        if self.allow and address not in self.allow:
            return _refused(ctx, f"client address {address.text} is not allowed")
        return _PASS


def _refused(ctx: RequestContext, why: str) -> Verdict:
    return Verdict(rejection=Refused(403, "ip-denied", "Forbidden", f"{why} on {ctx.route}"))
