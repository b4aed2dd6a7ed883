"""Verification keys: static ones from the config and JSON Web Key Sets fetched from
an identity provider, cached.

A key is bound to one algorithm when it is loaded (a PyJWK per allowed, compatible
algorithm), so a token can never make an RSA key verify an HMAC, or a P-256 key an
ES384. A token's `jku`, `x5u` and `jwk` headers are never read: keys come only from
here. The key set is refetched when a token names an unknown `kid`, at most once per
`jwks_refresh_s`, and in the background once it is older than `jwks_max_age_s`; while
the identity provider is down, the keys already fetched keep working."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK, PyJWTError
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from contracts.config import JwtIssuer, StaticKey
from ingress.auth.http import read_json

log = logging.getLogger("relaygate.auth.jwks")

MAX_JWKS_BYTES = 1024 * 1024
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_HMAC = frozenset({"HS256", "HS384", "HS512"})
_CURVES = {
    "P-256": frozenset({"ES256"}),
    "P-384": frozenset({"ES384"}),
    "P-521": frozenset({"ES512"}),
    "Ed25519": frozenset({"EdDSA"}),
    "Ed448": frozenset({"EdDSA"}),
}


class KeysUnavailable(Exception):
    """No key set was ever fetched and the identity provider cannot be reached."""


def _algorithms_for(jwk: dict[str, Any]) -> frozenset[str]:
    kty = jwk.get("kty")
    if kty == "RSA":
        return _RSA
    if kty == "oct":
        return _HMAC
    if kty in ("EC", "OKP"):
        return _CURVES.get(str(jwk.get("crv")), frozenset())
    return frozenset()


def bind(jwk: dict[str, Any], allowed: Iterable[str]) -> list[PyJWK]:
    """One PyJWK per algorithm that the issuer allows, the key type supports and the
    key's own `alg` (when it names one) agrees with. Encryption keys are skipped."""
    if jwk.get("use", "sig") != "sig":
        return []
    algorithms = _algorithms_for(jwk) & set(allowed)
    named = jwk.get("alg")
    if named is not None:
        algorithms &= {named}
    keys = []
    for algorithm in sorted(algorithms):
        try:
            keys.append(PyJWK(jwk, algorithm=algorithm))
        except (PyJWTError, TypeError, ValueError, KeyError) as exc:  # a malformed key
            log.warning("skipping key %r: %s", jwk.get("kid"), exc)
    return keys


def _pem_jwk(pem: str) -> dict[str, Any]:
    data = pem.encode()
    public = (
        x509.load_pem_x509_certificate(data).public_key()
        if b"CERTIFICATE" in data
        else load_pem_public_key(data)
    )
    if isinstance(public, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(public, as_dict=True)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(public, as_dict=True)
    if isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return OKPAlgorithm.to_jwk(public, as_dict=True)
    raise ValueError(f"unsupported public key type {type(public).__name__}")


def static_keys(keys: Sequence[StaticKey], allowed: Iterable[str]) -> list[PyJWK]:
    bound: list[PyJWK] = []
    for key in keys:
        jwk = dict(key.jwk) if key.jwk is not None else _pem_jwk(key.pem or "")
        jwk.pop("kid", None)
        if key.kid is not None:
            jwk["kid"] = key.kid
        bound += bind(jwk, allowed)
    return bound


class KeyRing:
    """Keys by (kid, algorithm). A token without `kid` may be checked against every key
    of its algorithm, and a key without one against every token."""

    def __init__(self, keys: Iterable[PyJWK]) -> None:
        self.named: dict[tuple[str, str], PyJWK] = {}
        self.by_algorithm: dict[str, list[PyJWK]] = {}
        self.unnamed: dict[str, list[PyJWK]] = {}
        for key in keys:
            kid = key.key_id
            if isinstance(kid, str):
                self.named[(kid, key.algorithm_name)] = key
            else:
                self.unnamed.setdefault(key.algorithm_name, []).append(key)
            self.by_algorithm.setdefault(key.algorithm_name, []).append(key)

    def find(self, kid: str | None, algorithm: str) -> list[PyJWK]:
        if kid is None:
            return self.by_algorithm.get(algorithm, [])
        key = self.named.get((kid, algorithm))
        if key is not None:
            return [key]
        return self.unnamed.get(algorithm, [])

    def __len__(self) -> int:
        return sum(len(keys) for keys in self.by_algorithm.values())


class JwksCache:
    """One identity provider's key set, fetched over a shared aiohttp session."""

    def __init__(
        self,
        spec: JwtIssuer,
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        assert spec.jwks_url is not None
        self.url = spec.jwks_url
        self.algorithms = tuple(spec.algorithms)
        self.refresh_s = spec.jwks_refresh_s
        self.max_age_s = spec.jwks_max_age_s
        self.timeout = aiohttp.ClientTimeout(total=spec.jwks_timeout_ms / 1000)
        self.session = session
        self.ring: KeyRing | None = None
        self.fetched_at = float("-inf")  # last success
        self.attempted_at = float("-inf")  # last try, successful or not
        self._inflight: asyncio.Task[None] | None = None

    async def find(self, kid: str | None, algorithm: str) -> list[PyJWK]:
        """The keys that may have signed a token with this `kid` and `alg`; refetches the
        set (at most once per interval) when the kid is unknown. `KeysUnavailable` when
        there has never been a key set to look in."""
        ring = self.ring
        now = time.monotonic()
        if ring is not None:
            keys = ring.find(kid, algorithm)
            if keys:
                stale = now - self.fetched_at > self.max_age_s
                if stale and self._inflight is None and now - self.attempted_at >= self.refresh_s:
                    self._start()  # refresh behind the request; these keys still serve it
                return keys
        if self._inflight is None and now - self.attempted_at < self.refresh_s:
            if ring is None:
                raise KeysUnavailable(self.url)
            return []
        await asyncio.shield(self._start())
        if self.ring is None:
            raise KeysUnavailable(self.url)
        return self.ring.find(kid, algorithm)

    def _start(self) -> asyncio.Task[None]:
        """One fetch at a time: callers that come while it runs wait for the same one."""
        if self._inflight is None:
            self.attempted_at = time.monotonic()
            self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight.add_done_callback(self._done)
        return self._inflight

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight = None

    async def _fetch(self) -> None:
        try:
            async with self.session().get(
                self.url, timeout=self.timeout, allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                document = await read_json(response, MAX_JWKS_BYTES)
            entries = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(entries, list):
                raise ValueError("no `keys` list")
            keys: list[PyJWK] = []
            for entry in entries:
                if isinstance(entry, dict):
                    keys += bind(entry, self.algorithms)
            if not keys:
                raise ValueError(f"no key usable with {', '.join(self.algorithms)}")
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, KeyError) as exc:
            kept = f"keeping {len(self.ring)} cached key(s)" if self.ring else "no keys cached"
            log.warning("key set %s: fetch failed (%s); %s", self.url, exc or repr(exc), kept)
            return
        self.ring = KeyRing(keys)
        self.fetched_at = time.monotonic()
        log.info("key set %s: %d key(s)", self.url, len(keys))

    async def aclose(self) -> None:
        task = self._inflight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
