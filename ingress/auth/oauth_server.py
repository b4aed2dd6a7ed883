"""The gateway's OAuth 2.0 authorization server for third-party applications, on the
data plane: the token endpoint (RFC 6749
client credentials grant, client_secret_basic or client_secret_post), revocation
(RFC 7009), introspection (RFC 7662), metadata (RFC 8414) and the JWKS.

Built by hand on the raw ASGI data plane rather than on authlib: authlib's server is
synchronous and framework-bound (Flask, Django), our stores are async, and this grant
is a few checks; PyJWT signs and verifies the tokens."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import orjson

from ingress.auth.clients import OAuthClients
from ingress.auth.signing import AccessTokens
from ingress.auth.store import Record, StoreUnavailable

MAX_FORM_BYTES = 64 * 1024
GRANT = "client_credentials"
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


class AuthorizationServer:
    """The data-plane endpoints: `endpoints()` -> exact path -> ASGI handler."""

    def __init__(self, clients: OAuthClients, tokens: AccessTokens, scopes: list[str]) -> None:
        self.clients = clients
        self.tokens = tokens
        self.scopes = scopes
        issuer = tokens.issuer
        self.metadata: dict[str, Any] = {
            "issuer": issuer,
            "token_endpoint": f"{issuer}/oauth/token",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "introspection_endpoint": f"{issuer}/oauth/introspect",
            "grant_types_supported": [GRANT],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
            "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        }
        if scopes:
            self.metadata["scopes_supported"] = scopes

    def endpoints(self) -> dict[str, Endpoint]:
        return {
            "/oauth/token": self._form_endpoint(self.token),
            "/oauth/revoke": self._form_endpoint(self.revoke),
            "/oauth/introspect": self._form_endpoint(self.introspect),
            "/.well-known/jwks.json": self._document(self.tokens.keys.jwks),
            "/.well-known/oauth-authorization-server": self._document(self._metadata),
        }

    async def _metadata(self) -> dict[str, Any]:
        return self.metadata

    # ------------------------------------------------------------------ the grants

    async def token(self, headers: dict[str, str], form: dict[str, str]) -> dict[str, Any]:
        client = await self._client(headers, form)
        grant = form.get("grant_type")
        if grant is None:
            raise OAuthError("invalid_request", "grant_type is missing")
        if grant != GRANT:
            raise OAuthError("unsupported_grant_type", f"only {GRANT} is supported")
        allowed: list[str] = client["scopes"] or []
        requested = form["scope"].split() if "scope" in form else allowed
        refused = [s for s in requested if s not in allowed]
        if refused:
            raise OAuthError("invalid_scope", f"not allowed for this client: {' '.join(refused)}")
        scopes = list(dict.fromkeys(requested))
        token, claims = await self.tokens.mint(client, scopes)
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": claims["exp"] - claims["iat"],
        }
        if scopes:
            answer["scope"] = claims["scope"]
        return answer

    async def revoke(self, headers: dict[str, str], form: dict[str, str]) -> dict[str, Any]:
        """RFC 7009: a client revokes its own tokens; an unknown or invalid token is
        answered 200 as well (there is nothing left to revoke)."""
        client = await self._client(headers, form)
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is missing")
        claims = await self.tokens.claims(token)
        if claims is not None:
            if claims["client_id"] != client["client_id"]:
                raise OAuthError("unauthorized_client", "the token was issued to another client")
            await self.tokens.revoke(claims)
        return {}

    async def introspect(self, headers: dict[str, str], form: dict[str, str]) -> dict[str, Any]:
        """RFC 7662, for any registered client (resource servers register as clients)."""
        await self._client(headers, form)
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is missing")
        claims = await self.tokens.claims(token)
        if (
            claims is None
            or await self.tokens.revoked_id(claims)
            or not await self.clients.active(claims["client_id"])
        ):
            return {"active": False}
        return {"active": True, "token_type": "Bearer", **claims}

    async def _client(self, headers: dict[str, str], form: dict[str, str]) -> Record:
        authorization = headers.get("authorization", "")
        if authorization[:6].lower() == "basic ":
            if "client_secret" in form:
                raise OAuthError("invalid_request", "use one client authentication method")
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise _invalid_client("malformed Basic credentials") from None
            client_id, colon, secret = decoded.partition(":")
            if not colon:
                raise _invalid_client("malformed Basic credentials")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
        elif "client_secret" in form and "client_id" in form:
            client_id, secret = form["client_id"], form["client_secret"]
        else:
            raise _invalid_client("authenticate with HTTP Basic or client_id and client_secret")
        client = await self.clients.authenticate(client_id, secret)
        if client is None:
            raise _invalid_client("unknown client or wrong secret")
        return client

    # ------------------------------------------------------------------ HTTP plumbing

    def _form_endpoint(
        self, handler: Callable[[dict[str, str], dict[str, str]], Awaitable[dict[str, Any]]]
    ) -> Endpoint:
        async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["method"] != "POST":
                await _json(send, 405, _error("invalid_request", "use POST"), [(b"allow", b"POST")])
                return
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                form = _form(headers, await _body(receive))
                answer = await handler(headers, form)
            except OAuthError as exc:
                extra = []
                if exc.status == 401:
                    extra.append((b"www-authenticate", b'Basic realm="relaygate"'))
                await _json(send, exc.status, _error(exc.error, exc.description), extra)
                return
            except StoreUnavailable:
                await _json(
                    send,
                    503,
                    _error("temporarily_unavailable", "the credential store is unreachable"),
                    [(b"retry-after", b"1")],
                )
                return
            await _json(send, 200, answer)

        return endpoint

    def _document(self, make: Callable[[], Awaitable[dict[str, Any]]]) -> Endpoint:
        async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["method"] not in ("GET", "HEAD"):
                await _json(send, 405, _error("invalid_request", "use GET"), [(b"allow", b"GET")])
                return
            try:
                document = await make()
            except StoreUnavailable:
                await _json(send, 503, _error("temporarily_unavailable", "store unreachable"))
                return
            cache = [(b"cache-control", b"public, max-age=60")]
            await _json(send, 200, document, cache, head=scope["method"] == "HEAD")

        return endpoint


def _error(error: str, description: str) -> dict[str, str]:
    return {"error": error, "error_description": description}


def _form(headers: dict[str, str], body: bytes) -> dict[str, str]:
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "send application/x-www-form-urlencoded")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=False, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the form is not UTF-8") from None
    repeated = [name for name, values in fields.items() if len(values) > 1]
    if repeated:  # RFC 6749 §3.2
        raise OAuthError("invalid_request", f"parameter repeated: {', '.join(repeated)}")
    return {name: values[0] for name, values in fields.items()}


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", f"the form is above {MAX_FORM_BYTES} bytes", 413)
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _json(
    send: Send,
    status: int,
    document: dict[str, Any],
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    head: bool = False,
) -> None:
    body = orjson.dumps(document)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"pragma", b"no-cache"),
    ]
    if extra:
        names = {name for name, _ in extra}
        if b"cache-control" in names:
            names.add(b"pragma")
        headers = [h for h in headers if h[0] not in names] + extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
