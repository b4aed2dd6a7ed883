"""Who may read the API docs, and what each reader sees: the admin token reads
everything; anyone else must be accepted by one of the docs' authentication policies
(the gateway's own jwt, introspection, api_key and oauth policies), and then sees the
routes, topics and events its roles allow."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from contracts.config import (
    ApiKeyPolicy,
    Config,
    DocsAuthPolicy,
    IntrospectionPolicy,
    JwtPolicy,
    OAuthPolicy,
    Policy,
)
from contracts.envelope import first_header
from ingress.policies import EdgePolicy, PolicyState, RequestContext, TierResolver
from ingress.request import Refused

DOCS_ROUTE = "api-docs"  # the route name the policies see (an API key scoped to routes: 403)


@dataclass(frozen=True, slots=True)
class Reader:
    subject: str
    roles: frozenset[str] | None  # None: the admin token, which sees everything

    def sees(self, roles: list[str] | None) -> bool:
        """Unset `roles`: any authenticated reader; else one role in common."""
        if self.roles is None or roles is None:
            return True
        return not self.roles.isdisjoint(roles)


def reader_policies(config: Config) -> list[DocsAuthPolicy]:
    """`docs.auth`, or else each distinct authentication policy of the config, without
    its scope and role requirements: readers sign in as callers do, and `docs.roles`
    (not a route's requirements) decides what they see."""
    if config.docs.auth is not None:
        return list(config.docs.auth)
    found: list[DocsAuthPolicy] = []
    for spec in [*config.policies, *(p for route in config.routes for p in route.policies)]:
        reader: DocsAuthPolicy
        if isinstance(spec, JwtPolicy | IntrospectionPolicy):
            reader = spec.model_copy(update={"scopes": [], "roles": [], "optional": False})
        elif isinstance(spec, ApiKeyPolicy | OAuthPolicy):
            reader = spec.model_copy(update={"scopes": []})
        else:
            continue
        if reader not in found:
            found.append(reader)
    return found


class DocsAccess:
    """Built once per config (from the ingress's own `PolicyState`: its key stores, key
    sets and token caches), asked once per docs request."""

    def __init__(self, config: Config, state: PolicyState) -> None:
        specs: list[Policy] = [*reader_policies(config)]
        self.policies: tuple[EdgePolicy, ...] = state.build(config, specs)
        token = config.admin.token
        self.admin = f"Bearer {token}".encode() if token is not None else None
        self.tiers = TierResolver(config)

    async def authenticate(
        self, path: str, headers: list[tuple[str, str]], client_ip: str
    ) -> Reader | Refused:
        """The reader, or why not: each policy is tried in order and the first that
        authenticates the caller admits it. A 403 or 503 of a policy wins over the 401s
        (the caller did authenticate, or could not be checked)."""
        authorization = first_header(headers, "authorization")
        if (
            self.admin is not None
            and authorization is not None
            and hmac.compare_digest(authorization.encode("latin-1"), self.admin)
        ):
            return Reader("admin", None)
        refusals: list[Refused] = []
        tier = self.tiers(None, headers, client_ip)
        for policy in self.policies:
            context = RequestContext(DOCS_ROUTE, "GET", path, headers, client_ip, tier)
            verdict = await policy(context)
            if verdict.rejection is None and context.principal is not None:
                principal = context.principal
                return Reader(principal.subject, frozenset(principal.roles))
            if verdict.rejection is not None:
                if verdict.rejection.status != 401:
                    return verdict.rejection
                refusals.append(verdict.rejection)
        return self._unauthenticated(refusals)

    def _unauthenticated(self, refusals: list[Refused]) -> Refused:
        challenges = [h for refusal in refusals for h in refusal.headers]
        if self.admin is not None:
            challenges.append((b"www-authenticate", b'Bearer realm="relaygate-admin"'))
        if not refusals and self.admin is None:
            detail = "no way to read the API docs is configured: set docs.auth or admin.token"
        elif not refusals:
            detail = "send Authorization: Bearer <admin.token>"
        else:
            detail = "; ".join(dict.fromkeys(refusal.detail for refusal in refusals))
        return Refused(401, "unauthenticated", "Authentication required", detail, challenges)
