"""Authentication at the edge: the `jwt` and `introspection` policies and their shared
state (one HTTP client session, key-set caches, the verified-token cache); API keys,
OAuth clients and the authorization server live beside them (see credentials.py)."""

from __future__ import annotations

from typing import Any

import aiohttp

from contracts.config import Config, IntrospectionPolicy, JwtPolicy
from ingress.auth.bearer import ExpiringCache, Identity
from ingress.auth.introspection import IntrospectionAuth, Introspector
from ingress.auth.jwks import JwksCache
from ingress.auth.jwt import JwtAuth, JwtVerifier, build_verifier

__all__ = ["AuthState", "IntrospectionAuth", "JwtAuth"]

MAX_CACHED_JWTS = 10_000


class AuthState:
    """What the authentication policies of one ingress node share across routes; the
    key sets and the HTTP session outlive reloads, verified tokens do not."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.jwks: dict[tuple[Any, ...], JwksCache] = {}
        self.tokens: ExpiringCache[Identity] = ExpiringCache(MAX_CACHED_JWTS)
        self.introspectors: dict[str, Introspector] = {}
        self._config: Config | None = None
        self._verifier: JwtVerifier | None = None

    def session(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        return self._session

    def _configure(self, config: Config) -> JwtVerifier:
        if config is not self._config or self._verifier is None:
            self._config = config
            self._verifier = build_verifier(config, self.jwks, self.session)
            self.tokens.clear()  # verified under the old issuer settings
            old = self.introspectors
            self.introspectors = {}
            for name, spec in config.authorization_servers.items():
                kept = old.get(name)
                if kept is None or kept.spec != spec:  # unchanged: its answers stay cached
                    kept = Introspector(name, spec, self.session)
                self.introspectors[name] = kept
        return self._verifier

    def jwt(self, config: Config, spec: JwtPolicy) -> JwtAuth:
        return JwtAuth(spec, self._configure(config), self.tokens)

    def introspection(self, config: Config, spec: IntrospectionPolicy) -> IntrospectionAuth:
        self._configure(config)
        return IntrospectionAuth(spec, self.introspectors[spec.server])

    async def aclose(self) -> None:
        for cache in self.jwks.values():
            await cache.aclose()
        if self._session is not None:
            await self._session.close()
