"""Everything credential-related one ingress node shares across routes and reloads: the
store, API keys, and (when `auth_server` is configured) OAuth clients and tokens."""

from __future__ import annotations

from redis.asyncio import Redis

from contracts.config import Config
from ingress.auth.apikeys import ApiKeys
from ingress.auth.clients import OAuthClients
from ingress.auth.oauth_server import AuthorizationServer
from ingress.auth.signing import AccessTokens
from ingress.auth.store import Store, open_store


class Credentials:
    def __init__(self, config: Config, redis: Redis | None) -> None:
        ttl = config.state.credentials_ttl_ms
        self.store: Store = open_store(config, redis)
        self.api_keys = ApiKeys(self.store, ttl, config.api_keys.rotation_grace_s)
        self.clients = OAuthClients(self.store, ttl)
        self.tokens: AccessTokens | None = None
        self.server: AuthorizationServer | None = None
        options = config.auth_server
        if options is not None:
            self.tokens = AccessTokens(self.store, config, options)
            self.server = AuthorizationServer(self.clients, self.tokens, options.scopes)

    async def aclose(self) -> None:
        await self.store.aclose()
