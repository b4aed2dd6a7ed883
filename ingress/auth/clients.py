"""OAuth clients: third-party applications registered through the admin API, each with
a secret (shown once, stored as its SHA-256), allowed scopes, a tier and metadata."""

from __future__ import annotations

import secrets
from typing import Any

from ingress.auth.store import (
    Record,
    RecordCache,
    Store,
    hash_secret,
    now_ms,
    secret_matches,
)

CLIENT_KIND = "oauth_client"
FIELDS = ("name", "subject", "tenant", "roles", "scopes", "tier", "metadata")
PUBLIC = ("client_id", *FIELDS, "created_ms", "revoked_ms")


def public(record: Record) -> Record:
    return {name: record.get(name) for name in PUBLIC}


class OAuthClients:
    def __init__(self, store: Store, ttl_ms: int) -> None:
        self.store = store
        self.cache = RecordCache(store, CLIENT_KIND, ttl_ms)

    async def create(self, fields: dict[str, Any]) -> tuple[str, Record]:
        """A new client: (its secret, shown only now; its record)."""
        secret = secrets.token_urlsafe(32)
        record: Record = {name: fields.get(name) for name in FIELDS}
        record.update(
            client_id=f"rgc_{secrets.token_hex(8)}",
            hash=hash_secret(secret),
            created_ms=now_ms(),
            revoked_ms=None,
        )
        await self.store.put(CLIENT_KIND, record["client_id"], record)
        return secret, record

    async def get(self, client_id: str) -> Record | None:
        return await self.store.get(CLIENT_KIND, client_id)

    async def list(self) -> list[Record]:
        return await self.store.list(CLIENT_KIND)

    async def update(self, client_id: str, changes: dict[str, Any]) -> Record | None:
        record = await self.get(client_id)
        if record is None:
            return None
        record.update({name: value for name, value in changes.items() if name in FIELDS})
        await self.store.put(CLIENT_KIND, client_id, record)
        self.cache.forget(client_id)
        return record

    async def revoke(self, client_id: str) -> Record | None:
        """The client can no longer get tokens, and its tokens are refused."""
        record = await self.get(client_id)
        if record is not None and record["revoked_ms"] is None:
            record["revoked_ms"] = now_ms()
            await self.store.put(CLIENT_KIND, client_id, record)
            self.cache.forget(client_id)
        return record

    async def authenticate(self, client_id: str, secret: str) -> Record | None:
        record = await self.cache.get(client_id)
        if record is None or record["revoked_ms"] is not None:
            return None
        return record if secret_matches(secret, record["hash"]) else None

    async def active(self, client_id: str) -> bool:
        record = await self.cache.get(client_id)
        return record is not None and record["revoked_ms"] is None
