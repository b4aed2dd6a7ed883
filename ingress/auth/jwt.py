"""`jwt`: bearer JWTs verified at the edge (RFC 7519, RFC 8725 practices).

The token's `iss` selects a configured issuer; its algorithms, keys, audience, `typ`
and required claims are the issuer's, never the token's. Verified tokens are kept by
hash until they expire (at most `cache_s`), so the usual request costs one SHA-256
and a dict lookup. Every failure answers the same 401 (see `problems`)."""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt as pyjwt
import orjson

from contracts.config import Config, JwtIssuer, JwtPolicy
from ingress.auth import problems
from ingress.auth.bearer import BearerGate, ClaimReader, ExpiringCache, Identity, token_key
from ingress.auth.jwks import JwksCache, KeyRing, KeysUnavailable, static_keys
from ingress.policies.base import RequestContext, Verdict

log = logging.getLogger("relaygate.auth.jwt")

MAX_KID_CHARS = 256
MAX_KEYS_TRIED = 8  # a token without `kid`: at most this many candidate keys


class TokenRejected(Exception):
    """`description` may be shown to the client; `reason` is for the log only."""

    def __init__(self, reason: str, description: str = problems.INVALID) -> None:
        super().__init__(reason)
        self.description = description


def _b64json(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise TokenRejected(f"malformed segment: {exc}") from None


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, unverified: only to pick the issuer and key."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected(f"{len(parts)} segments, not 3 (JWE and unsecured JWTs are refused)")
    header, claims = _b64json(parts[0]), _b64json(parts[1])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRejected("header or claims are not JSON objects")
    return header, claims


def _media_type(value: str) -> str:
    value = value.lower()
    return value.removeprefix("application/")


class IssuerVerifier:
    """Everything about checking one issuer's tokens, built once per config."""

    def __init__(self, name: str, spec: JwtIssuer, jwks: JwksCache | None) -> None:
        self.name = name
        self.issuer = spec.issuer
        self.audience = list(spec.audience)
        self.algorithms = frozenset(spec.algorithms)
        self.leeway_s = spec.leeway_s
        self.cache_s = spec.cache_s
        self.typ = frozenset(_media_type(t) for t in spec.typ)
        self.static = KeyRing(static_keys(spec.keys, spec.algorithms))
        self.jwks = jwks
        self.read = ClaimReader(spec.claims, spec.tenant, name)
        required = ["exp", *(c for c in spec.required_claims if c != "exp")]
        self.decoder = pyjwt.PyJWT(
            options={"require": required, "enforce_minimum_key_length": True}
        )

    async def verify(
        self, token: str, header: dict[str, Any], now: float
    ) -> tuple[Identity, float]:
        """The identity and until when it may be cached, or `TokenRejected`."""
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise TokenRejected(f"alg {str(algorithm)[:20]!r} is not accepted by {self.name}")
        if self.typ:
            typ = header.get("typ")
            if not isinstance(typ, str) or _media_type(typ) not in self.typ:
                raise TokenRejected(f"typ {str(typ)[:40]!r} is not accepted by {self.name}")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_CHARS):
            raise TokenRejected("kid is not a short string")
        keys = self.static.find(kid, algorithm)
        if self.jwks is not None and (kid is None or (kid, algorithm) not in self.static.named):
            keys = [*keys, *await self.jwks.find(kid, algorithm)]
        if not keys:
            raise TokenRejected(f"no {algorithm} key {str(kid)[:40]!r} for {self.name}")
        decoded: dict[str, Any] | None = None
        for key in keys[:MAX_KEYS_TRIED]:
            try:
                decoded = self.decoder.decode_complete(
                    token,
                    key=key,
                    algorithms=[algorithm],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway_s,
                )
                break
            except pyjwt.InvalidSignatureError:
                continue
            except pyjwt.ExpiredSignatureError:
                raise TokenRejected("expired", problems.EXPIRED) from None
            except pyjwt.PyJWTError as exc:
                raise TokenRejected(f"{type(exc).__name__}: {exc}") from None
        if decoded is None:
            raise TokenRejected(f"signature does not verify with {self.name}'s keys")
        claims: dict[str, Any] = decoded["payload"]
        identity = self.read(claims)
        if identity is None:
            raise TokenRejected("no subject claim")
        until = min(float(claims["exp"]) + self.leeway_s, now + self.cache_s)
        return identity, until


class JwtVerifier:
    """All configured issuers; a token's `iss` picks one."""

    def __init__(self, issuers: dict[str, IssuerVerifier]) -> None:
        self.by_iss = {v.issuer: v for v in issuers.values()}

    async def verify(self, token: str, now: float) -> tuple[Identity, float]:
        header, claims = peek(token)
        iss = claims.get("iss")
        issuer = self.by_iss.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise TokenRejected(f"unknown issuer {str(iss)[:80]!r}")
        return await issuer.verify(token, header, now)


def build_verifier(
    config: Config,
    jwks_caches: dict[tuple[Any, ...], JwksCache],
    session: Callable[[], aiohttp.ClientSession],
) -> JwtVerifier:
    """Reuse the key-set caches whose settings did not change (they outlive reloads)."""
    verifiers: dict[str, IssuerVerifier] = {}
    used: set[tuple[Any, ...]] = set()
    for name, spec in config.issuers.items():
        jwks = None
        if spec.jwks_url is not None:
            key = (
                spec.jwks_url,
                tuple(spec.algorithms),
                spec.jwks_refresh_s,
                spec.jwks_max_age_s,
                spec.jwks_timeout_ms,
            )
            jwks = jwks_caches.get(key)
            if jwks is None:
                jwks = jwks_caches[key] = JwksCache(spec, session)
            used.add(key)
        verifiers[name] = IssuerVerifier(name, spec, jwks)
    for stale in set(jwks_caches) - used:
        del jwks_caches[stale]
    return JwtVerifier(verifiers)


class JwtAuth:
    """The `jwt` edge policy of one route."""

    def __init__(
        self, spec: JwtPolicy, verifier: JwtVerifier, tokens: ExpiringCache[Identity]
    ) -> None:
        self.gate = BearerGate(spec, "jwt")
        self.allowed = frozenset(spec.issuers) if spec.issuers is not None else None
        self.verifier = verifier
        self.tokens = tokens

    async def __call__(self, ctx: RequestContext) -> Verdict:
        gate = self.gate
        token = gate.bearer(ctx)
        if isinstance(token, Verdict):
            return token
        key = token_key(token)
        now = time.time()
        identity = self.tokens.get(key, now)
        if identity is None:
            try:
                identity, until = await self.verifier.verify(token, now)
            except TokenRejected as exc:
                log.info("%s: jwt refused: %s", ctx.route, exc)
                return Verdict(rejection=gate.invalid(exc.description))
            except KeysUnavailable as exc:
                log.warning("%s: no key set from %s", ctx.route, exc)
                return Verdict(rejection=problems.unavailable("the identity provider"))
            self.tokens.put(key, identity, until)
        if self.allowed is not None and identity.source not in self.allowed:
            log.info("%s: jwt refused: issuer %s is not accepted here", ctx.route, identity.source)
            return Verdict(rejection=gate.invalid())
        return gate.admit(ctx, identity)
