"""Edge policies, built once per config: `PolicyState.build(config, specs)` -> policies in order."""

from __future__ import annotations

from contracts.config import (
    ApiKeyPolicy,
    Config,
    IntrospectionPolicy,
    IpRulesPolicy,
    JwtPolicy,
    OAuthPolicy,
    Policy,
)
from ingress.policies.base import EdgePolicy, RequestContext, TierResolver, Verdict
from ingress.policies.ip_rules import IpRules
from ingress.policies.rate_limit import RateLimit
from ingress.state.limiter import MemoryLimiter
from ingress.state.redis_limiter import RedisLimiter

__all__ = ["EdgePolicy", "PolicyState", "RequestContext", "TierResolver", "Verdict"]


class PolicyState:
    """What policies share across routes and reloads: the limiter and credential stores,
    the authentication state (key sets, token caches, HTTP session)."""

    def __init__(self, config: Config) -> None:
        # Imported here: ingress.auth's policies build on ingress.policies.base themselves.
        from ingress.auth import AuthState
        from ingress.auth.credentials import Credentials

        self.local = MemoryLimiter()
        self.auth = AuthState()
        self.shared: RedisLimiter | None = None
        if config.state.url is not None:
            self.shared = RedisLimiter(
                config.state.url, timeout_ms=config.state.timeout_ms, prefix=config.bus.prefix
            )
        self.credentials = Credentials(config, self.shared.redis if self.shared else None)

    def build(self, config: Config, specs: list[Policy]) -> tuple[EdgePolicy, ...]:
        return tuple(self._build(config, spec) for spec in specs)

    def _build(self, config: Config, spec: Policy) -> EdgePolicy:
        from ingress.auth.apikeys import ApiKeyAuth
        from ingress.auth.oauth_policy import OAuthAuth

        if isinstance(spec, JwtPolicy):
            return self.auth.jwt(config, spec)
        if isinstance(spec, IntrospectionPolicy):
            return self.auth.introspection(config, spec)
        if isinstance(spec, IpRulesPolicy):
            return IpRules(spec)
        credentials = self.credentials
        if isinstance(spec, ApiKeyPolicy):
            return ApiKeyAuth(spec, credentials.api_keys)
        if isinstance(spec, OAuthPolicy):
            if credentials.tokens is None:  # auth_server added by a reload: needs a restart
                raise ValueError("an oauth policy needs auth_server (set at startup)")
            return OAuthAuth(spec, credentials.tokens, credentials.clients)
        return RateLimit(spec, config, self.shared, self.local)

    async def aclose(self) -> None:
        await self.auth.aclose()
        await self.credentials.aclose()
        if self.shared is not None:
            await self.shared.aclose()
