"""`rate_limit`: limits and quotas per caller key, by tier; 429 with `Retry-After` and the
IETF `RateLimit` / `RateLimit-Policy` headers (draft-ietf-httpapi-ratelimit-headers)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from contracts.config import Config, Limit, RateLimitPolicy, Tier
from ingress.policies.base import RequestContext, Verdict
from ingress.request import Refused
from ingress.state.limiter import (
    Decision,
    MemoryLimiter,
    QuotaLimit,
    WindowLimit,
    current_quotas,
)
from ingress.state.redis_limiter import RedisLimiter

log = logging.getLogger("relaygate.ratelimit")

KeyPart = Callable[[RequestContext], str]


def _key_part(spec: str) -> KeyPart:
    if spec.startswith("header:"):
        name = spec.removeprefix("header:").lower()
        return lambda ctx: ctx.header(name) or "-"
    if spec == "client_address":
        return lambda ctx: ctx.client_ip or "-"
    if spec == "route":
        return lambda ctx: ctx.route
    if spec == "tenant":
        return lambda ctx: (ctx.principal.tenant if ctx.principal else None) or "-"
    # consumer and api_key: the authenticated subject (edge security fills the principal).
    return lambda ctx: ctx.principal.subject if ctx.principal else "anonymous"


def _windows(limits: list[Limit]) -> tuple[WindowLimit, ...]:
    return tuple(WindowLimit(lim.requests, round(lim.window_s * 1000)) for lim in limits)


class RateLimit:
    def __init__(
        self,
        spec: RateLimitPolicy,
        config: Config,
        shared: RedisLimiter | None,
        local: MemoryLimiter,
    ) -> None:
        self.name = spec.name
        self.parts = [_key_part(part) for part in spec.key]
        self.own = _windows(spec.limits)
        self.tiers: dict[str, Tier] = dict(config.tiers)
        self.tier_windows = {name: _windows(t.limits) for name, t in config.tiers.items()}
        self.quotas = spec.quotas
        self.closed = spec.on_store_error == "closed"
        self.shared = shared
        self.local = local
        self._described: dict[object, tuple[bytes, list[str], list[int]]] = {}

    async def __call__(self, ctx: RequestContext) -> Verdict:
        tier = self.tiers.get(ctx.tier) if ctx.tier else None
        limits = self.own or (self.tier_windows[ctx.tier] if tier is not None and ctx.tier else ())
        quotas: tuple[QuotaLimit, ...] = ()
        if self.quotas and tier is not None:
            quotas = current_quotas(tier.quota.daily, tier.quota.monthly)
        if not limits and not quotas:
            return Verdict()
        key = self.name + "|" + "|".join(part(ctx) for part in self.parts)
        decision: Decision | None = None
        if self.shared is not None:
            decision = await self.shared.hit(key, limits, quotas)
            if decision is None and self.closed:
                return Verdict(
                    rejection=Refused(
                        503,
                        "rate-limit-unavailable",
                        "Rate limiting unavailable",
                        "the shared rate-limit store is unreachable and this route fails closed",
                        [(b"retry-after", b"1")],
                    )
                )
        if decision is None:
            decision = self.local.hit(key, limits, quotas)
        headers = self._headers(limits, quotas, decision)
        if decision.allowed:
            return Verdict(headers)
        seconds = max(1, -(-decision.retry_after_ms // 1000))
        headers.append((b"retry-after", str(seconds).encode()))
        return Verdict(
            headers,
            Refused(
                429,
                "rate-limited",
                "Too many requests",
                f"rate limit {self.name!r} exceeded; retry in {seconds} s",
                headers,
            ),
        )

    def _headers(
        self, limits: tuple[WindowLimit, ...], quotas: tuple[QuotaLimit, ...], decision: Decision
    ) -> list[tuple[bytes, bytes]]:
        shape = (limits, tuple((q.name, q.requests) for q in quotas) if quotas else ())
        described = self._described.get(shape)
        if described is None:
            described = self._describe(limits, quotas)
            self._described[shape] = described
        policy, names, capacities = described
        # RateLimit reports the limit closest to running out.
        best: tuple[str, int, int] | None = None
        taken = 1 if decision.allowed else 0
        for name, capacity, (used, reset_ms) in zip(names, capacities, decision.usage, strict=True):
            remaining = max(0, capacity - used - taken)
            if best is None or remaining < best[1]:
                best = (name, remaining, max(0, -(-reset_ms // 1000)))
        headers = [(b"ratelimit-policy", policy)]
        if best is not None:
            headers.append((b"ratelimit", f'"{best[0]}";r={best[1]};t={best[2]}'.encode()))
        return headers

    def _describe(
        self, limits: tuple[WindowLimit, ...], quotas: tuple[QuotaLimit, ...]
    ) -> tuple[bytes, list[str], list[int]]:
        """The RateLimit-Policy value, and each limit's name and capacity (a tier's
        limits are fixed, so this is worked out once per tier and cached)."""
        policies = [
            f'"{self.name}-{i}";q={lim.requests};w={max(1, lim.window_ms // 1000)}'
            for i, lim in enumerate(limits)
        ]
        policies += [f'"{self.name}-{q.name}";q={q.requests}' for q in quotas]
        capacities = [lim.requests for lim in limits] + [q.requests for q in quotas]
        names = [f"{self.name}-{i}" for i in range(len(limits))]
        names += [f"{self.name}-{q.name}" for q in quotas]
        return ", ".join(policies).encode(), names, capacities
