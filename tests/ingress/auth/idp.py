"""A local identity provider for the auth tests: a real aiohttp server that serves a
JWKS and an RFC 7662 introspection endpoint, counts every request it gets, and has a
`/watched/...` space that attack tokens point `jku`/`x5u` at (it must stay silent).
Plus the gateway under test: the real IngressApp on a real port, NATS, an echo worker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import jwt as pyjwt
import orjson
import uvicorn
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from contracts.bus.nats import NatsBus
from contracts.config import Config
from contracts.topics import Topics
from ingress.app import IngressApp
from tests.support.processes import free_port
from workers.echo import echo
from workers.sdk import Request, Response, Worker

ISSUER = "https://idp.test/"
AUDIENCE = "orders-api"
CLIENT_ID = "gateway"
CLIENT_SECRET = "s3cret:with/odd chars"


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """One 2048-bit key per name for the whole session (generating them is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "scope": "orders:read orders:write",
        "roles": ["clerk"],
        "tid": "acme",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    payload: dict[str, Any],
    key: Any,
    *,
    kid: str | None = "k1",
    alg: str = "RS256",
    headers: dict[str, Any] | None = None,
) -> str:
    extra: dict[str, Any] = {"typ": "at+jwt"}
    if kid is not None:
        extra["kid"] = kid
    extra.update(headers or {})
    return pyjwt.encode(payload, key, algorithm=alg, headers=extra)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}.{b64(signature)}"


@dataclass
class IdentityProvider:
    """The test's IdP. `keys` is what /jwks serves; `tokens` what /introspect knows."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    jwks_raw: bytes | None = None  # when set, /jwks answers this instead of `keys`
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> IdentityProvider:
        app = web.Application()
        app.router.add_get("/jwks", self._jwks)
        app.router.add_post("/introspect", self._introspect)
        app.router.add_route("*", "/watched/{rest:.*}", self._watched)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _jwks(self, request: web.Request) -> web.Response:
        self.hits["jwks"] += 1
        if self.jwks_raw is not None:
            return web.Response(body=self.jwks_raw, content_type="application/json")
        return web.json_response({"keys": self.keys})

    async def _introspect(self, request: web.Request) -> web.Response:
        self.hits["introspect"] += 1
        form = await request.post()
        if "client_secret" in form:  # client_secret_post
            login, password = str(form.get("client_id")), str(form["client_secret"])
            if (login, password) != (CLIENT_ID, CLIENT_SECRET):
                return web.json_response({"error": "invalid_client"}, status=401)
            return web.json_response(self.tokens.get(str(form.get("token")), {"active": False}))
        given = request.headers.get("Authorization", "")
        try:
            login, _, password = (
                base64.b64decode(given.removeprefix("Basic ")).decode().partition(":")
            )
        except ValueError:
            login = password = ""
        if (unquote(login), unquote(password)) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response({"error": "invalid_client"}, status=401)
        answer = self.tokens.get(str(form.get("token")), {"active": False})
        return web.json_response(answer)

    async def _watched(self, request: web.Request) -> web.Response:
        self.hits["watched"] += 1
        return web.json_response({"keys": []})


@contextlib.asynccontextmanager
async def identity_provider() -> AsyncIterator[IdentityProvider]:
    idp = await IdentityProvider().start()
    try:
        yield idp
    finally:
        await idp.stop()


@dataclass
class Gateway:
    url: str
    app: IngressApp


async def whoami(request: Request) -> Response:
    """A worker that answers with the whole principal the envelope carried."""
    principal = request.principal
    return Response.json(None if principal is None else dataclasses.asdict(principal))


class _Server(uvicorn.Server):
    """The test process keeps its own signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def gateway(nats_url: str, config: dict[str, Any]) -> AsyncIterator[Gateway]:
    """The real IngressApp served by uvicorn on a free port, over NATS, with an echo
    worker (it answers with the principal's subject) on the same NATS."""
    prefix = f"auth-{uuid.uuid4().hex[:8]}"
    port = free_port()
    parsed = Config(**{**config, "bus": {"url": nats_url, "prefix": prefix}})
    ingress_bus = NatsBus(nats_url, topics=Topics(prefix), node_id=f"in-{prefix}")
    worker_bus = NatsBus(nats_url, topics=Topics(prefix), node_id=f"wk-{prefix}")
    await ingress_bus.connect()
    await worker_bus.connect()
    subscriptions = []
    for topic, handler in (("echo", echo), ("whoami", whoami)):
        worker = Worker(topic)
        worker.handler(handler)
        subscriptions.append(await worker.serve(worker_bus))
    app = IngressApp(parsed, ingress_bus)
    server = _Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            loop="none",
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield Gateway(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await task
        await app.aclose()
        for subscription in subscriptions:
            await subscription.stop()
        await ingress_bus.close()
        await worker_bus.close()


@contextlib.asynccontextmanager
async def idp_and_gateway(
    nats_url: str, config: Callable[[IdentityProvider], dict[str, Any]]
) -> AsyncIterator[tuple[IdentityProvider, Gateway]]:
    """An identity provider whose /jwks serves the `idp` RSA key as `k1`, and a
    gateway on `config(idp)`."""
    async with identity_provider() as idp:
        idp.keys = [public_jwk(rsa_key("idp"), "k1")]
        async with gateway(nats_url, config(idp)) as gw:
            yield idp, gw
