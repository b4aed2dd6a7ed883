"""The credential part of the admin API: API keys (`/admin/keys`), OAuth clients and
signing keys (`/admin/oauth/...`); the bearer `admin.token` guard of the whole admin API;
and the authorization server's endpoints on the data plane when `auth_server` is set."""

from __future__ import annotations

import hmac
import logging
from collections.abc import MutableMapping
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.config import Config
from ingress.app import IngressApp
from ingress.auth import apikeys
from ingress.auth import clients as oauth_clients
from ingress.auth.credentials import Credentials
from ingress.auth.store import StoreUnavailable

log = logging.getLogger("relaygate.admin")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes carry no token
# The API docs authenticate their readers themselves (ingress/apidocs), the token included;
# so does the dashboard (ingress/dashboard: the token, or the session cookie of a login).
OPEN_PREFIX = ("/api-docs", "/dashboard")


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200, description="For people: what it is for.")
    subject: str | None = Field(
        None, max_length=200, description="The principal's subject; unset: the key/client id."
    )
    tenant: str | None = Field(None, max_length=200)
    roles: list[str] = Field(default_factory=list)
    scopes: list[str] = Field(default_factory=list)
    tier: str | None = Field(None, description="A tier of the config: its limits apply.")
    metadata: dict[str, str] = Field(default_factory=dict)


class KeyFields(_Fields):
    routes: list[str] | None = Field(None, description="Routes the key may call; unset: all.")


class ClientFields(_Fields):
    pass


class KeyChanges(KeyFields):
    """Only the fields given change."""


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: float | None = Field(
        None, ge=0, description="How long the previous secret stays valid; unset: the config's."
    )


class AdminToken:
    """Every admin call but the probes needs `Authorization: Bearer <admin.token>`."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if hmac.compare_digest(sent, self.expected):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"detail": "send Authorization: Bearer <admin.token>"},
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="relaygate-admin"'},
        )
        await response(scope, receive, send)


def install_credentials(admin: FastAPI, app: IngressApp, config: Config) -> None:
    """The router, the token guard and the data-plane endpoints, once per ingress."""
    credentials = app.policy_state.credentials
    if credentials.server is not None:
        app.endpoints.update(credentials.server.endpoints())
    if config.admin.token is not None:
        admin.add_middleware(AdminToken, token=config.admin.token)
    elif config.admin.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "admin API on %s without admin.token: anyone who reaches it can issue keys",
            config.admin.host,
        )

    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"credential store unavailable: {exc}"}, status_code=503)

    admin.add_exception_handler(StoreUnavailable, unavailable)
    admin.include_router(_keys_router(credentials, admin))
    admin.include_router(_oauth_router(credentials, admin))


def _check(admin: FastAPI, fields: dict[str, Any], *, client: bool = False) -> None:
    """Tiers and routes must exist in the running config, so that a typo is not a key
    that silently has no limits or no route."""
    config: Config = admin.state.config
    tier = fields.get("tier")
    if tier is not None and tier not in config.tiers:
        known = ", ".join(sorted(config.tiers)) or "none defined"
        raise HTTPException(422, f"unknown tier {tier!r} (tiers: {known})")
    names = {route.name for route in config.routes}
    unknown = sorted(set(fields.get("routes") or ()) - names)
    if unknown:
        raise HTTPException(422, f"unknown route(s): {', '.join(unknown)}")
    allowed = config.auth_server.scopes if config.auth_server is not None else []
    if client and allowed:
        extra = sorted(set(fields.get("scopes") or ()) - set(allowed))
        if extra:
            raise HTTPException(422, f"scope(s) not in auth_server.scopes: {', '.join(extra)}")


def _found(record: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """The record, or a 404 that names what was not there."""
    if record is None:
        raise HTTPException(404, f"no {what}")
    return record


def _keys_router(credentials: Credentials, admin: FastAPI) -> APIRouter:
    keys = credentials.api_keys
    router = APIRouter(prefix="/admin/keys", tags=["API keys"])

    @router.post("", status_code=201, summary="Issue a key; the key is shown only in this answer")
    async def create(fields: KeyFields) -> dict[str, Any]:
        data = fields.model_dump()
        _check(admin, data)
        key, record = await keys.create(data)
        return {"key": key, **apikeys.public(record)}

    @router.get("", summary="Every key (never their secrets)")
    async def list_keys() -> dict[str, Any]:
        return {"keys": [apikeys.public(r) for r in await keys.list()]}

    @router.get("/{key_id}", summary="One key")
    async def get_key(key_id: str) -> dict[str, Any]:
        return apikeys.public(_found(await keys.get(key_id), f"API key {key_id}"))

    @router.patch("/{key_id}", summary="Change a key's routes, scopes, tier or metadata")
    async def update(key_id: str, changes: KeyChanges) -> dict[str, Any]:
        data = changes.model_dump(exclude_unset=True)
        _check(admin, data)
        return apikeys.public(_found(await keys.update(key_id, data), f"API key {key_id}"))

    @router.post("/{key_id}/rotate", summary="A new secret; the old one works for a grace period")
    async def rotate(key_id: str, rotation: Rotation | None = None) -> dict[str, Any]:
        _found(await keys.get(key_id), f"API key {key_id}")
        rotated = await keys.rotate(key_id, rotation.grace_s if rotation else None)
        if rotated is None:
            raise HTTPException(409, f"API key {key_id} is revoked")
        return {"key": rotated[0], **apikeys.public(rotated[1])}

    @router.delete("/{key_id}", summary="Revoke a key: refused by every node within a second")
    async def revoke(key_id: str) -> dict[str, Any]:
        return apikeys.public(_found(await keys.revoke(key_id), f"API key {key_id}"))

    return router


def _oauth_router(credentials: Credentials, admin: FastAPI) -> APIRouter:
    clients = credentials.clients
    router = APIRouter(prefix="/admin/oauth", tags=["OAuth clients"])

    def tokens() -> Any:
        if credentials.tokens is None:
            raise HTTPException(409, "no auth_server in the config")
        return credentials.tokens

    @router.post("/clients", status_code=201, summary="Register a third-party application")
    async def create(fields: ClientFields) -> dict[str, Any]:
        data = fields.model_dump()
        _check(admin, data, client=True)
        secret, record = await clients.create(data)
        return {"client_secret": secret, **oauth_clients.public(record)}

    @router.get("/clients", summary="Every client (never their secrets)")
    async def list_clients() -> dict[str, Any]:
        return {"clients": [oauth_clients.public(r) for r in await clients.list()]}

    @router.get("/clients/{client_id}", summary="One client")
    async def get_client(client_id: str) -> dict[str, Any]:
        return oauth_clients.public(_found(await clients.get(client_id), f"client {client_id}"))

    @router.patch("/clients/{client_id}", summary="Change a client's scopes, tier or metadata")
    async def update(client_id: str, changes: ClientFields) -> dict[str, Any]:
        data = changes.model_dump(exclude_unset=True)
        _check(admin, data, client=True)
        record = await clients.update(client_id, data)
        return oauth_clients.public(_found(record, f"client {client_id}"))

    @router.delete("/clients/{client_id}", summary="Revoke a client and refuse its tokens")
    async def revoke(client_id: str) -> dict[str, Any]:
        record = await clients.revoke(client_id)
        return oauth_clients.public(_found(record, f"client {client_id}"))

    @router.post("/keys/rotate", summary="A new signing key; the old stays published")
    async def rotate_keys() -> dict[str, Any]:
        kid, retired = await tokens().keys.rotate()
        return {"kid": kid, "retired": retired}

    return router
