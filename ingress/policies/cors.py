"""CORS of a route (its `cors:` block), compiled once: preflights are answered at the
ingress without a bus hop; actual responses get the headers when the origin is allowed.

Not a chain policy on purpose: a preflight names the method of the request to come
(the route may not list OPTIONS) and carries no credentials, so it is answered before
the route's policies run."""

from __future__ import annotations

from contracts.config import CorsOptions

Headers = list[tuple[bytes, bytes]]

# Methods a route that accepts any method offers when `methods` is not given.
_ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_VARY = (b"vary", b"Origin")


class Cors:
    def __init__(self, options: CorsOptions, route_methods: list[str] | None) -> None:
        self.any_origin = "*" in options.origins
        self.origins = frozenset(options.origins) - {"*"}
        self.credentials = options.credentials
        self.methods = frozenset(options.methods or route_methods or _ANY_METHOD)
        self.any_header = "*" in options.headers
        self.headers = frozenset(options.headers) - {"*"}
        # With '*' and no credentials every origin gets the same answer: no Vary needed.
        self.star = self.any_origin and not self.credentials
        allowed: Headers = []
        if self.credentials:
            allowed.append((b"access-control-allow-credentials", b"true"))
        if options.expose_headers:
            allowed.append(
                (b"access-control-expose-headers", ", ".join(options.expose_headers).encode())
            )
        self.allowed = tuple(allowed)  # on actual responses, after the allowed origin
        self.vary = () if self.star else (_VARY,)
        fixed: Headers = [
            (b"access-control-allow-methods", ", ".join(sorted(self.methods)).encode()),
            (b"access-control-max-age", str(options.max_age_s).encode()),
            (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        ]
        if self.credentials:
            fixed.append((b"access-control-allow-credentials", b"true"))
        self.preflight_fixed = tuple(fixed)
        self.listed_headers = ", ".join(sorted(self.headers)).encode()

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    def allow_origin(self, origin: str) -> bytes:
        return b"*" if self.star else origin.encode("latin-1")

    def actual(self, origin: str | None) -> Headers:
        """Headers for a response to a request with this `Origin` (None: it sent none)."""
        if origin is None or not self.allows(origin):
            return list(self.vary)
        return [
            (b"access-control-allow-origin", self.allow_origin(origin)),
            *self.allowed,
            *self.vary,
        ]

    def preflight(self, origin: str, method: str, requested: str | None) -> Headers | None:
        """The answer to a preflight, or None when it is refused."""
        if not self.allows(origin) or method not in self.methods:
            return None
        headers = [(b"access-control-allow-origin", self.allow_origin(origin))]
        if requested:
            names = [n.strip().lower() for n in requested.split(",") if n.strip()]
            if not self.any_header and not all(name in self.headers for name in names):
                return None
            allow = ", ".join(names).encode("latin-1") if self.any_header else self.listed_headers
            headers.append((b"access-control-allow-headers", allow))
        headers.extend(self.preflight_fixed)
        return headers
