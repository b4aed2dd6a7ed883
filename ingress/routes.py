"""The route table, compiled once per config: method + host + path template -> route."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from contracts.config import Config, Policy, Route, UpstreamTarget
from contracts.topics import Topics
from ingress.policies import EdgePolicy
from ingress.policies.cors import Cors
from ingress.policies.security_headers import SecurityHeaders

BuildPolicies = Callable[[list[Policy]], tuple[EdgePolicy, ...]]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(str|path|int))?\}")
_CONVERTERS = {None: "[^/]+", "str": "[^/]+", "path": ".*", "int": "[0-9]+"}


def compile_template(template: str) -> re.Pattern[str]:
    """`/users/{id}/files/{rest:path}` -> an anchored regex with named groups."""
    pattern = ""
    last = 0
    for m in _PARAM.finditer(template):
        pattern += re.escape(template[last : m.start()])
        pattern += f"(?P<{m[1]}>{_CONVERTERS[m[2]]})"
        last = m.end()
    pattern += re.escape(template[last:])
    return re.compile(f"^{pattern}$")


@dataclass(slots=True, frozen=True)
class CompiledRoute:
    route: Route
    name: str
    topic: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None
    host: str | None
    host_suffix: str | None
    headers: tuple[tuple[str, str], ...]
    timeout_s: float
    timeout_ms: int
    max_body_bytes: int
    policies: tuple[EdgePolicy, ...]
    cors: Cors | None
    security: SecurityHeaders | None

    def host_matches(self, host: str) -> bool:
        if self.host is None:
            return True
        if self.host_suffix is not None:
            return host.endswith(self.host_suffix)
        return host == self.host


class RouteTable:
    def __init__(self, config: Config, build_policies: BuildPolicies | None = None) -> None:
        topics = Topics(config.bus.prefix)
        self.routes: list[CompiledRoute] = []
        base = config.security_headers
        # For what no route answers (404, 405) and the gateway's own endpoints.
        self.security = SecurityHeaders(base) if base is not None else None
        self.cors = any(route.cors is not None for route in config.routes)
        for route in config.routes:
            when = route.when
            security = self.security
            if route.security_headers is not None:
                security = SecurityHeaders(route.security_headers.over(base))
            host = when.host.lower() if when.host else None
            timeout_ms = route.timeout_ms or config.ingress.timeout_ms
            self.routes.append(
                CompiledRoute(
                    route=route,
                    name=route.name,
                    topic=topics.request(
                        route.name if isinstance(route.to, UpstreamTarget) else route.to.topic
                    ),
                    pattern=compile_template(when.path),
                    methods=frozenset(when.methods) if when.methods else None,
                    host=host,
                    host_suffix=host[1:] if host and host.startswith("*.") else None,
                    headers=tuple((k.lower(), v) for k, v in when.headers.items()),
                    timeout_s=timeout_ms / 1000,
                    timeout_ms=timeout_ms,
                    max_body_bytes=route.max_body_bytes
                    if route.max_body_bytes is not None
                    else config.ingress.max_body_bytes,
                    policies=build_policies([*config.policies, *route.policies])
                    if build_policies is not None
                    else (),
                    cors=Cors(route.cors, when.methods) if route.cors is not None else None,
                    security=security,
                )
            )

    def match(
        self, method: str, host: str, path: str, headers: list[tuple[str, str]]
    ) -> tuple[CompiledRoute, dict[str, str]] | set[str] | None:
        """The first route that matches; else the methods allowed on this path (for a
        405), or None (404)."""
        allowed: set[str] = set()
        for compiled in self.routes:
            m = compiled.pattern.match(path)
            if m is None or not compiled.host_matches(host):
                continue
            if compiled.headers and not all(h in headers for h in compiled.headers):
                continue
            if compiled.methods is not None and method not in compiled.methods:
                allowed |= compiled.methods
                continue
            return compiled, m.groupdict()
        return allowed or None
