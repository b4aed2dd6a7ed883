"""The authorization server's access tokens: signing keys kept in the credential store
and published as a JWKS, RFC 9068 JWTs minted and verified with them, and the list of
revoked token ids.

Rotation adds a key and makes it current; the previous key stays published (and trusted)
until the last token it signed has expired, then the store lets it expire."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from contracts.config import AuthServerConfig, Config
from ingress.auth.store import Record, RecordCache, Store, now_ms

KEY_KIND = "signing_key"
REVOKED_KIND = "revoked_token"
TOKEN_TYPE = "at+jwt"  # noqa: S105 (RFC 9068 typ)
RELOAD_S = 1.0  # how stale this node's view of the keys may get (other nodes rotate)
MARGIN_MS = 60_000  # a retired key stays published this much past its last token


@dataclass(slots=True, frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: Any
    public: Any
    jwk: dict[str, Any]
    publish_until_ms: int | None  # None: the current key


def _generate(alg: str) -> Any:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _loaded(record: Record) -> SigningKey:
    private: Any = serialization.load_pem_private_key(record["private_pem"].encode(), None)
    public = private.public_key()
    alg = record["alg"]
    jwk: dict[str, Any] = dict(
        ECAlgorithm.to_jwk(public, as_dict=True)
        if alg == "ES256"
        else RSAAlgorithm.to_jwk(public, as_dict=True)
    )
    jwk.update(kid=record["kid"], alg=alg, use="sig")
    return SigningKey(record["kid"], alg, private, public, jwk, record.get("publish_until_ms"))


class SigningKeys:
    def __init__(self, store: Store, options: AuthServerConfig) -> None:
        self.store = store
        self.alg = options.algorithm
        self.ttl_ms = options.token_ttl_s * 1000
        self.keys: dict[str, SigningKey] = {}
        self.current: SigningKey | None = None
        self.loaded_at = float("-inf")
        self.lock = asyncio.Lock()

    async def refresh(self, *, force: bool = False) -> None:
        """Read the keys again when this node's view is older than RELOAD_S (or forced);
        make the first key when there is none."""
        async with self.lock:
            if not force and time.monotonic() - self.loaded_at < RELOAD_S:
                return
            records = await self.store.list(KEY_KIND)
            if not any(r.get("publish_until_ms") is None for r in records):
                records.append(await self._new_key())
            keys = [_loaded(r) for r in records]
            self.keys = {k.kid: k for k in keys}
            current = [r for r in records if r.get("publish_until_ms") is None]
            newest = max(current, key=lambda r: (r["created_ms"], r["kid"]))
            self.current = self.keys[newest["kid"]]
            self.loaded_at = time.monotonic()

    async def _new_key(self) -> Record:
        private = await asyncio.to_thread(_generate, self.alg)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        record: Record = {
            "kid": secrets.token_hex(8),
            "alg": self.alg,
            "private_pem": pem,
            "created_ms": now_ms(),
            "publish_until_ms": None,
        }
        await self.store.put(KEY_KIND, record["kid"], record)
        return record

    async def rotate(self) -> tuple[str, list[str]]:
        """A new current key; every other key retires. (new kid, retired kids)"""
        await self.refresh(force=True)
        until = now_ms() + self.ttl_ms + MARGIN_MS
        retired: list[str] = []
        for record in await self.store.list(KEY_KIND):
            if record.get("publish_until_ms") is None:
                record["publish_until_ms"] = until
                await self.store.put(KEY_KIND, record["kid"], record, expires_ms=until)
                retired.append(record["kid"])
        new = await self._new_key()
        await self.refresh(force=True)
        return new["kid"], retired

    async def jwks(self) -> dict[str, Any]:
        await self.refresh()
        return {"keys": [key.jwk for key in self.keys.values() if _published(key)]}

    async def signing_key(self) -> SigningKey:
        await self.refresh()
        assert self.current is not None  # refresh makes one
        return self.current

    async def verifying_key(self, kid: str) -> SigningKey | None:
        key = self.keys.get(kid)
        if key is None:  # perhaps another node rotated since this one last looked
            await self.refresh()
            key = self.keys.get(kid)
        return key if key is not None and _published(key) else None


def _published(key: SigningKey) -> bool:
    return key.publish_until_ms is None or key.publish_until_ms > now_ms()


class AccessTokens:
    """Mint and check the gateway's own access tokens. Verified tokens are remembered
    (bounded), so the hot path pays the signature once per token; revocation is read
    through a cache trusted for `state.credentials_ttl_ms`."""

    def __init__(self, store: Store, config: Config, options: AuthServerConfig) -> None:
        self.store = store
        self.keys = SigningKeys(store, options)
        self.issuer = options.issuer or f"http://{config.ingress.host}:{config.ingress.port}"
        self.audience = options.audience or self.issuer
        self.ttl_s = options.token_ttl_s
        self.revoked = RecordCache(store, REVOKED_KIND, config.state.credentials_ttl_ms)
        self.verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.max_verified = 10_000

    async def mint(self, client: Record, scopes: list[str]) -> tuple[str, dict[str, Any]]:
        key = await self.keys.signing_key()
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client["subject"] or client["client_id"],
            "client_id": client["client_id"],
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": secrets.token_hex(16),
        }
        for extra in ("tenant", "roles", "tier"):
            if client.get(extra):
                claims[extra] = client[extra]
        token = jwt.encode(
            claims, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": TOKEN_TYPE}
        )
        return token, claims

    async def claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this server signed, unexpired; None otherwise. Does not
        look at revocation (see `revoked_id`)."""
        found = self.verified.get(token)
        if found is not None:
            return found if found["exp"] > time.time() else None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        kid = header.get("kid")
        if header.get("typ") != TOKEN_TYPE or not isinstance(kid, str):
            return None
        key = await self.keys.verifying_key(kid)
        if key is None:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public,
                algorithms=[key.alg],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "jti", "iss", "aud", "sub", "client_id"]},
            )
        except jwt.PyJWTError:
            return None
        self.verified[token] = claims
        while len(self.verified) > self.max_verified:
            self.verified.popitem(last=False)
        return claims

    async def revoke(self, claims: dict[str, Any]) -> None:
        """Refuse this token from now on (kept until it would have expired anyway)."""
        jti = claims["jti"]
        record = {"jti": jti, "client_id": claims["client_id"], "revoked_ms": now_ms()}
        await self.store.put(REVOKED_KIND, jti, record, expires_ms=int(claims["exp"]) * 1000)
        self.revoked.forget(jti)

    async def revoked_id(self, claims: dict[str, Any]) -> bool:
        return await self.revoked.get(claims["jti"]) is not None
