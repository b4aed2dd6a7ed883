"""Where a proxied request goes: the upstream's base URL, then the route's path template
(filled from the request's parameters) or the original path, then the original query.

Everything stays percent-encoded exactly as the client sent it: the ingress matched
the route on the raw path, so its parameters are raw too, and yarl is told the string
is already encoded. `/a%2Fb%20c` reaches the upstream as `/a%2Fb%20c`.
"""

from __future__ import annotations

import re

from yarl import URL

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(?:str|path|int))?\}")


class UpstreamUrl:
    """Compiled once per route and instance: `url(path, query, params)` per request."""

    __slots__ = ("_literals", "_names", "_origin")

    def __init__(self, base_url: str, path_template: str | None) -> None:
        base = URL(base_url)
        # Scheme, authority and base path as one string: the per-request URL is a
        # single concatenation and one parse, the cheapest yarl offers.
        self._origin = str(base.with_query(None).with_fragment(None)).rstrip("/")
        self._literals: tuple[str, ...] | None = None
        self._names: tuple[str, ...] = ()
        if path_template is not None:
            # "/v2/{id}/x" -> literals ("/v2/", "/x"), names ("id",): literal, value, ...
            self._literals = tuple(_PARAM.split(path_template)[::2])
            self._names = tuple(m[1] for m in _PARAM.finditer(path_template))

    def url(self, path: str, query: str, params: dict[str, str]) -> URL:
        if self._literals is not None:
            literals = self._literals
            parts = [literals[0]]
            for name, literal in zip(self._names, literals[1:], strict=True):
                parts.append(params[name])
                parts.append(literal)
            path = "".join(parts)
        if query:
            return URL(f"{self._origin}{path}?{query}", encoded=True)
        return URL(self._origin + path, encoded=True)
