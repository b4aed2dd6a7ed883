"""The answers of authentication policies: RFC 6750 challenges with problem details.

    401 unauthenticated      no credentials, or credentials that do not verify; every
                             failure has the same shape, only `error_description` varies
    403 insufficient-scope   valid credentials without the scope or role a route needs
    503 auth-unavailable     the service that checks credentials cannot be reached

The exact reason a credential failed is logged, never told to the client beyond a
coarse description: the answer must not be an oracle for forging tokens."""

from __future__ import annotations

from ingress.request import Refused

INVALID = "the access token is invalid"
EXPIRED = "the access token has expired"


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def challenge(scheme: str, realm: str, **params: str) -> bytes:
    """`Bearer realm="api", error="invalid_token"` (RFC 6750 §3; RFC 9110 §11.6.1)."""
    parts = [f'realm="{_quoted(realm)}"']
    parts += [f'{name}="{_quoted(value)}"' for name, value in params.items()]
    return f"{scheme} {', '.join(parts)}".encode("latin-1", "replace")


def missing_credentials(realm: str, scheme: str = "Bearer") -> Refused:
    """No credentials at all: a bare challenge, no `error` (RFC 6750 §3.1)."""
    return Refused(
        401,
        "unauthenticated",
        "Authentication required",
        "this route needs credentials",
        [(b"www-authenticate", challenge(scheme, realm))],
    )


def invalid_token(realm: str, description: str = INVALID, scheme: str = "Bearer") -> Refused:
    return Refused(
        401,
        "unauthenticated",
        "Authentication required",
        description,
        [
            (
                b"www-authenticate",
                challenge(scheme, realm, error="invalid_token", error_description=description),
            )
        ],
    )


def insufficient_scope(realm: str, needed: str, scheme: str = "Bearer") -> Refused:
    """`needed`: what the route asks for, e.g. `scope "orders:write"`."""
    description = f"the access token lacks {needed}"
    params = {"error": "insufficient_scope", "error_description": description}
    return Refused(
        403,
        "insufficient-scope",
        "Insufficient scope",
        description,
        [(b"www-authenticate", challenge(scheme, realm, **params))],
    )


def unavailable(what: str, retry_after_s: int = 1) -> Refused:
    return Refused(
        503,
        "auth-unavailable",
        "Authentication unavailable",
        f"{what} cannot be reached; retry shortly",
        [(b"retry-after", str(retry_after_s).encode())],
    )
