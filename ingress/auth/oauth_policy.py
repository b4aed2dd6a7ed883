"""The `oauth` policy: a bearer access token of the gateway's own authorization server,
checked locally (its signing keys, expiry, issuer, audience) and against the revocation
list and the client's standing in the credential store (read through a short cache)."""

from __future__ import annotations

from contracts.config import OAuthPolicy
from contracts.envelope import Principal
from ingress.auth.apikeys import forbidden, store_unavailable
from ingress.auth.clients import OAuthClients
from ingress.auth.signing import AccessTokens
from ingress.auth.store import StoreUnavailable
from ingress.policies.base import RequestContext, Verdict
from ingress.request import Refused


def _challenge(error: str | None = None, scope: str | None = None) -> list[tuple[bytes, bytes]]:
    value = 'Bearer realm="relaygate"'
    if error:
        value += f', error="{error}"'
    if scope:
        value += f', scope="{scope}"'
    return [(b"www-authenticate", value.encode())]


class OAuthAuth:
    def __init__(self, spec: OAuthPolicy, tokens: AccessTokens, clients: OAuthClients) -> None:
        self.tokens = tokens
        self.clients = clients
        self.required = frozenset(spec.scopes)
        self.required_text = " ".join(spec.scopes)

    async def __call__(self, ctx: RequestContext) -> Verdict:
        authorization = ctx.header("authorization")
        if authorization is None or authorization[:7].lower() != "bearer ":
            return Verdict(
                rejection=Refused(
                    401,
                    "unauthenticated",
                    "Authentication required",
                    "send an access token: Authorization: Bearer <token>",
                    _challenge(),
                )
            )
        try:
            claims = await self.tokens.claims(authorization[7:].strip())
            valid = (
                claims is not None
                and not await self.tokens.revoked_id(claims)
                and await self.clients.active(claims["client_id"])
            )
        except StoreUnavailable:
            return Verdict(rejection=store_unavailable())
        if not valid or claims is None:
            return Verdict(
                rejection=Refused(
                    401,
                    "unauthenticated",
                    "Authentication required",
                    "the access token is invalid, expired or revoked",
                    _challenge("invalid_token"),
                )
            )
        scopes = claims["scope"].split() if claims.get("scope") else []
        if self.required and not self.required.issubset(scopes):
            refused = forbidden(f"the token lacks scope(s): {self.required_text}")
            refused.headers = _challenge("insufficient_scope", self.required_text)
            return Verdict(rejection=refused)
        ctx.authenticate(
            Principal(
                subject=claims["sub"],
                tenant=claims.get("tenant"),
                roles=list(claims.get("roles") or ()),
                scopes=scopes,
                tier=claims.get("tier"),
                authmethod="oauth",
            )
        )
        return Verdict()
