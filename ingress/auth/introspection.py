"""`introspection`: opaque bearer tokens checked with an OAuth 2.0 authorization
server's introspection endpoint (RFC 7662), with the gateway's client credentials.

Answers are cached by token hash: active ones until the token expires (at most
`cache_s`), inactive ones for `negative_cache_s`; concurrent requests with the same
token share one call. An unreachable or failing server is a 503, never a 401 (the
token may be fine) and never a 500."""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from contracts.config import AuthorizationServer, IntrospectionPolicy
from ingress.auth import problems
from ingress.auth.bearer import BearerGate, ClaimReader, ExpiringCache, Identity, token_key
from ingress.auth.http import read_json
from ingress.policies.base import RequestContext, Verdict

log = logging.getLogger("relaygate.auth.introspection")

MAX_ANSWER_BYTES = 256 * 1024


class ServerUnavailable(Exception):
    pass


class Introspector:
    """One authorization server's endpoint, with its answer cache."""

    def __init__(
        self, name: str, spec: AuthorizationServer, session: Callable[[], aiohttp.ClientSession]
    ) -> None:
        self.name = name
        self.spec = spec
        self.url = spec.introspection_url
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=spec.timeout_ms / 1000)
        secret = spec.client_secret.get_secret_value()
        self.form: dict[str, str] = {}
        self.headers = {"accept": "application/json"}
        if spec.auth_method == "client_secret_basic":
            # RFC 6749 §2.3.1: form-encode both before Basic.
            pair = f"{quote(spec.client_id, safe='')}:{quote(secret, safe='')}"
            self.headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            self.form = {"client_id": spec.client_id, "client_secret": secret}
        self.cache_s = spec.cache_s
        self.negative_cache_s = spec.negative_cache_s
        self.audience = frozenset(spec.audience)
        self.issuer = spec.issuer
        self.read = ClaimReader(spec.claims, spec.tenant, name)
        # Two caches: a flood of made-up tokens must not push out the active ones.
        self.active: ExpiringCache[Identity] = ExpiringCache(spec.max_cached_tokens)
        self.inactive: ExpiringCache[bool] = ExpiringCache(spec.max_cached_tokens)
        self.calls = 0
        self._inflight: dict[bytes, asyncio.Future[Identity | None]] = {}

    async def check(self, token: str) -> Identity | None:
        """The identity of an active token, None for an inactive one, or
        `ServerUnavailable`."""
        key = token_key(token)
        now = time.time()
        cached = self.active.get(key, now)
        if cached is not None:
            return cached
        if self.inactive.get(key, now):
            return None
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Identity | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            identity = await self._ask(token, key, now)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, ServerUnavailable) else ServerUnavailable())
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(identity)
            return identity
        finally:
            del self._inflight[key]

    async def _ask(self, token: str, key: bytes, now: float) -> Identity | None:
        self.calls += 1
        try:
            async with self.session().post(
                self.url,
                data={"token": token, "token_type_hint": "access_token", **self.form},
                headers=self.headers,
                timeout=self.timeout,
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                answer = await read_json(response, MAX_ANSWER_BYTES)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("introspection at %s failed: %s", self.url, exc or repr(exc))
            raise ServerUnavailable(self.url) from None
        if not isinstance(answer, dict):
            log.warning("introspection at %s: the answer is not a JSON object", self.url)
            raise ServerUnavailable(self.url)
        identity, until = self._judge(answer, now)
        if identity is None:
            self.inactive.put(key, True, now + self.negative_cache_s)
        else:
            self.active.put(key, identity, until)
        return identity

    def _judge(self, answer: dict[str, Any], now: float) -> tuple[Identity | None, float]:
        if answer.get("active") is not True:
            return None, 0.0
        exp, nbf = answer.get("exp"), answer.get("nbf")
        if exp is not None and not (_number(exp) and exp > now):
            return None, 0.0
        if nbf is not None and not (_number(nbf) and nbf <= now):
            return None, 0.0
        if self.issuer is not None and answer.get("iss") != self.issuer:
            return None, 0.0
        if self.audience:
            aud = answer.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(isinstance(a, str) and a in self.audience for a in auds):
                return None, 0.0
        identity = self.read(answer)
        until = now + self.cache_s
        if exp is not None:
            until = min(until, float(exp))
        return identity, until


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class IntrospectionAuth:
    """The `introspection` edge policy of one route."""

    def __init__(self, spec: IntrospectionPolicy, introspector: Introspector) -> None:
        self.gate = BearerGate(spec, "introspection")
        self.introspector = introspector

    async def __call__(self, ctx: RequestContext) -> Verdict:
        gate = self.gate
        token = gate.bearer(ctx)
        if isinstance(token, Verdict):
            return token
        try:
            identity = await self.introspector.check(token)
        except ServerUnavailable:
            return Verdict(rejection=problems.unavailable("the authorization server"))
        if identity is None:
            log.info("%s: token refused by %s (inactive)", ctx.route, self.introspector.name)
            return Verdict(rejection=gate.invalid())
        return gate.admit(ctx, identity)
