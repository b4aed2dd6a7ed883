"""What the bearer-token policies share: reading the token off the request, the
verified identity and its cache, claims -> principal, and the per-route checks."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from contracts.config import ClaimMapping, IntrospectionPolicy, JwtPolicy
from contracts.envelope import Principal
from ingress.auth import problems
from ingress.policies.base import RequestContext, Verdict
from ingress.request import Refused

V = TypeVar("V")


@dataclass(slots=True, frozen=True)
class Identity:
    """Who a verified token speaks for. `source` names the issuer or server that vouched."""

    subject: str
    tenant: str | None
    roles: tuple[str, ...]
    scopes: tuple[str, ...]
    tier: str | None
    source: str
    role_set: frozenset[str]
    scope_set: frozenset[str]


class ExpiringCache(Generic[V]):
    """Bounded map of token hash -> value with a deadline (epoch seconds). Full: the
    oldest entry goes (insertion order), which is cheap and good enough for tokens."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, V]] = {}

    def get(self, key: bytes, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: bytes, value: V, until: float) -> None:
        entries = self._entries
        if key not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[key] = (until, value)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def token_key(token: str) -> bytes:
    """Tokens are cached by hash: a memory dump of the cache holds no usable token."""
    return hashlib.sha256(token.encode("latin-1")).digest()


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """`name` as a key, else as a dotted path into nested objects (`realm_access.roles`)."""
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _first_strings(claims: Mapping[str, Any], names: Sequence[str]) -> tuple[str, ...]:
    """The strings of the first of `names` that is a claim; () when none is."""
    for name in names:
        value = claim(claims, name)
        if value is not None:
            return _strings(value)
    return ()


class ClaimReader:
    """Claims -> `Identity`, as the issuer's `claims` mapping says."""

    def __init__(self, mapping: ClaimMapping, tenant: str | None, source: str) -> None:
        self.mapping = mapping
        self.tenant = tenant
        self.source = source

    def __call__(self, claims: Mapping[str, Any]) -> Identity | None:
        """None when no subject claim holds a non-empty string."""
        mapping = self.mapping
        subject = None
        for name in mapping.subject:
            value = claim(claims, name)
            if isinstance(value, str) and value:
                subject = value
                break
        if subject is None:
            return None
        roles = _first_strings(claims, mapping.roles)
        scopes = _first_strings(claims, mapping.scopes)
        tenant = claim(claims, mapping.tenant) if mapping.tenant else None
        tier = claim(claims, mapping.tier) if mapping.tier else None
        return Identity(
            subject=subject,
            tenant=tenant if isinstance(tenant, str) and tenant else self.tenant,
            roles=roles,
            scopes=scopes,
            tier=tier if isinstance(tier, str) and tier else None,
            source=self.source,
            role_set=frozenset(roles),
            scope_set=frozenset(scopes),
        )


class BearerGate:
    """The request side of a bearer policy: token in, identity checked against the route."""

    def __init__(self, spec: JwtPolicy | IntrospectionPolicy, authmethod: str) -> None:
        self.realm = spec.realm
        self.optional = spec.optional
        self.max_token_bytes = spec.max_token_bytes
        self.scopes = frozenset(spec.scopes)
        self.roles = frozenset(spec.roles)
        self.authmethod = authmethod
        self.needed_scopes = "scope " + " ".join(f'"{s}"' for s in sorted(self.scopes))
        self.needed_roles = "one of the roles " + ", ".join(f'"{r}"' for r in sorted(self.roles))

    # Rejections are built per request: a raised exception object collects tracebacks.
    def invalid(self, description: str = problems.INVALID) -> Refused:
        return problems.invalid_token(self.realm, description)

    def token(self, ctx: RequestContext) -> str | Refused | None:
        """The bearer token; None: no credentials for this policy (pass when optional or
        already authenticated by an earlier policy); `Refused`: a bad Authorization header."""
        value = ctx.header("authorization")
        if value is None or value[:7].lower() != "bearer ":
            if self.optional or ctx.principal is not None:
                return None
            return problems.missing_credentials(self.realm)
        token = value[7:].strip()
        if not token or len(token) > self.max_token_bytes:
            return self.invalid()
        return token

    def bearer(self, ctx: RequestContext) -> str | Verdict:
        """The bearer token to check, or the verdict when there is none to check:
        `unauthenticated`'s when no credentials are for this policy, a rejection for a
        bad Authorization header."""
        token = self.token(ctx)
        if token is None:
            return self.unauthenticated(ctx)
        if isinstance(token, Refused):
            return Verdict(rejection=token)
        return token

    def unauthenticated(self, ctx: RequestContext) -> Verdict:
        """No bearer token and none needed here: an earlier policy's principal must
        still have the route's scopes and roles."""
        principal = ctx.principal
        if principal is None:
            if self.scopes or self.roles:
                return Verdict(rejection=problems.missing_credentials(self.realm))
            return Verdict()
        if self.scopes and not self.scopes <= set(principal.scopes):
            return Verdict(rejection=problems.insufficient_scope(self.realm, self.needed_scopes))
        if self.roles and not self.roles & set(principal.roles):
            return Verdict(rejection=problems.insufficient_scope(self.realm, self.needed_roles))
        return Verdict()

    def admit(self, ctx: RequestContext, identity: Identity) -> Verdict:
        """Check the route's scopes (all) and roles (any), then authenticate."""
        if self.scopes and not self.scopes <= identity.scope_set:
            return Verdict(rejection=problems.insufficient_scope(self.realm, self.needed_scopes))
        if self.roles and not self.roles & identity.role_set:
            return Verdict(rejection=problems.insufficient_scope(self.realm, self.needed_roles))
        ctx.authenticate(
            Principal(
                identity.subject,
                identity.tenant,
                list(identity.roles),
                list(identity.scopes),
                identity.tier,
                self.authmethod,
            )
        )
        return Verdict()
