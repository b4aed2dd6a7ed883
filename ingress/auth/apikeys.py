"""API keys: issued, listed, rotated (the previous secret keeps working for a grace
period), scoped to routes and revoked through the admin API; checked by the `api_key`
edge policy. A key is `rgk_<id>_<secret>`: the id finds the record, the secret's SHA-256
is compared in constant time."""

from __future__ import annotations

import secrets
from typing import Any

from contracts.config import ApiKeyPolicy
from contracts.envelope import Principal
from ingress.auth.store import (
    Record,
    RecordCache,
    Store,
    StoreUnavailable,
    hash_secret,
    now_ms,
    secret_matches,
)
from ingress.policies.base import RequestContext, Verdict
from ingress.request import Refused

KIND = "api_key"
PREFIX = "rgk_"
_ID_CHARS = frozenset("0123456789abcdef")
# What the admin API may set on a key, and shows of it (never a secret or its hash).
FIELDS = ("name", "subject", "tenant", "roles", "scopes", "tier", "routes", "metadata")
PUBLIC = ("id", *FIELDS, "created_ms", "rotated_ms", "previous_valid_until_ms", "revoked_ms")


def public(record: Record) -> Record:
    return {name: record.get(name) for name in PUBLIC}


def _split(presented: str) -> tuple[str, str] | None:
    if not presented.startswith(PREFIX):
        return None
    key_id, _, secret = presented[len(PREFIX) :].partition("_")
    if len(key_id) != 16 or not _ID_CHARS.issuperset(key_id) or len(secret) < 32:
        return None
    return key_id, secret


class ApiKeys:
    """The keys in the store, read through a per-node cache (see `RecordCache`)."""

    def __init__(self, store: Store, ttl_ms: int, grace_s: float) -> None:
        self.store = store
        self.cache = RecordCache(store, KIND, ttl_ms)
        self.grace_ms = round(grace_s * 1000)

    async def create(self, fields: dict[str, Any]) -> tuple[str, Record]:
        """A new key: (the key itself, shown only now; its record)."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        record: Record = {name: fields.get(name) for name in FIELDS}
        record.update(
            id=key_id,
            hash=hash_secret(secret),
            created_ms=now_ms(),
            rotated_ms=None,
            previous_hash=None,
            previous_valid_until_ms=None,
            revoked_ms=None,
        )
        await self.store.put(KIND, key_id, record)
        return f"{PREFIX}{key_id}_{secret}", record

    async def get(self, key_id: str) -> Record | None:
        return await self.store.get(KIND, key_id)

    async def list(self) -> list[Record]:
        return await self.store.list(KIND)

    async def _save(self, record: Record) -> Record:
        await self.store.put(KIND, record["id"], record)
        self.cache.forget(record["id"])
        return record

    async def update(self, key_id: str, changes: dict[str, Any]) -> Record | None:
        record = await self.get(key_id)
        if record is None:
            return None
        record.update({name: value for name, value in changes.items() if name in FIELDS})
        return await self._save(record)

    async def rotate(self, key_id: str, grace_s: float | None) -> tuple[str, Record] | None:
        """A new secret for the key; the current one stays valid for the grace period."""
        record = await self.get(key_id)
        if record is None or record["revoked_ms"] is not None:
            return None
        secret = secrets.token_urlsafe(32)
        now = now_ms()
        grace = self.grace_ms if grace_s is None else round(grace_s * 1000)
        record.update(
            previous_hash=record["hash"] if grace > 0 else None,
            previous_valid_until_ms=now + grace if grace > 0 else None,
            hash=hash_secret(secret),
            rotated_ms=now,
        )
        return f"{PREFIX}{key_id}_{secret}", await self._save(record)

    async def revoke(self, key_id: str) -> Record | None:
        record = await self.get(key_id)
        if record is None:
            return None
        if record["revoked_ms"] is None:
            record["revoked_ms"] = now_ms()
            await self._save(record)
        return record

    async def verify(self, presented: str) -> Record | None:
        """The record of a valid, unrevoked key; None for anything else."""
        parts = _split(presented)
        if parts is None:
            return None
        record = await self.cache.get(parts[0])
        if record is not None and not _matches(record, parts[1]):
            # Perhaps rotated on another node since this one cached it: read it again
            # (one read per wrong secret, as an unknown id costs; concurrent ones share it).
            record = await self.cache.get(parts[0], max_age_s=0)
            if record is not None and not _matches(record, parts[1]):
                return None
        if record is None or record["revoked_ms"] is not None:
            return None
        return record


def _matches(record: Record, secret: str) -> bool:
    if secret_matches(secret, record["hash"]):
        return True
    previous, until = record["previous_hash"], record["previous_valid_until_ms"]
    return previous is not None and until > now_ms() and secret_matches(secret, previous)


class ApiKeyAuth:
    """The `api_key` policy: the key from its header or `Authorization: ApiKey <key>`."""

    def __init__(self, spec: ApiKeyPolicy, keys: ApiKeys) -> None:
        self.keys = keys
        self.header = spec.header.lower()
        self.required = frozenset(spec.scopes)
        self.challenge = [(b"www-authenticate", f'ApiKey header="{spec.header}"'.encode())]

    def _unauthenticated(self, detail: str) -> Verdict:
        return Verdict(
            rejection=Refused(
                401, "unauthenticated", "Authentication required", detail, self.challenge
            )
        )

    async def __call__(self, ctx: RequestContext) -> Verdict:
        presented = ctx.header(self.header)
        if presented is None:
            authorization = ctx.header("authorization")
            if authorization is not None and authorization[:7].lower() == "apikey ":
                presented = authorization[7:].strip()
        if not presented:
            return self._unauthenticated(f"send an API key in {self.header} or Authorization")
        try:
            record = await self.keys.verify(presented)
        except StoreUnavailable:
            return Verdict(rejection=store_unavailable())
        if record is None:
            return self._unauthenticated("the API key is not valid")
        routes = record["routes"]
        if routes is not None and ctx.route not in routes:
            return Verdict(rejection=forbidden(f"the API key is not allowed on route {ctx.route}"))
        scopes: list[str] = record["scopes"] or []
        if self.required and not self.required.issubset(scopes):
            missing = " ".join(sorted(self.required.difference(scopes)))
            return Verdict(rejection=forbidden(f"the API key lacks scope(s): {missing}"))
        ctx.authenticate(
            Principal(
                subject=record["subject"] or record["id"],
                tenant=record["tenant"],
                roles=list(record["roles"] or ()),
                scopes=list(scopes),
                tier=record["tier"],
                authmethod="api_key",
            )
        )
        return Verdict()


def forbidden(detail: str) -> Refused:
    return Refused(403, "forbidden", "Not allowed", detail)


def store_unavailable() -> Refused:
    return Refused(
        503,
        "credentials-unavailable",
        "Credential store unavailable",
        "the gateway cannot check credentials right now; retry shortly",
        [(b"retry-after", b"1")],
    )
