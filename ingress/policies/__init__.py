"""Edge policies, built once per config: `build_chain(config, specs)` -> policies in order."""

from __future__ import annotations

from contracts.config import Config, IpRulesPolicy, Policy
from ingress.policies.base import EdgePolicy, RequestContext, TierResolver, Verdict
from ingress.policies.ip_rules import IpRules
from ingress.policies.rate_limit import RateLimit
from ingress.state.limiter import MemoryLimiter
from ingress.state.redis_limiter import RedisLimiter

__all__ = ["EdgePolicy", "PolicyState", "RequestContext", "TierResolver", "Verdict"]


class PolicyState:
    """What policies share across routes and reloads: the limiter stores."""

    def __init__(self, config: Config) -> None:
        self.local = MemoryLimiter()
        self.shared: RedisLimiter | None = None
        if config.state.url is not None:
            self.shared = RedisLimiter(
                config.state.url, timeout_ms=config.state.timeout_ms, prefix=config.bus.prefix
            )

    def build(self, config: Config, specs: list[Policy]) -> tuple[EdgePolicy, ...]:
        return tuple(self._policy(config, spec) for spec in specs)

    def _policy(self, config: Config, spec: Policy) -> EdgePolicy:
        if isinstance(spec, IpRulesPolicy):
            return IpRules(spec)
        return RateLimit(spec, config, self.shared, self.local)

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()
