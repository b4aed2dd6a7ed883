"""Security headers (CSP, HSTS, nosniff, Referrer-Policy, X-Frame-Options, …) compiled
once per route into encoded header lists, so that adding them costs a list extend.

Responses the gateway writes itself get `gateway_content_security_policy` (strict by
default) and every configured header. Proxied and cached responses get each header by
its `mode`: `keep_upstream` adds it only when the upstream sent none, `override`
replaces the upstream's."""

from __future__ import annotations

from contracts.config import HeaderRule, HstsOptions, SecurityHeadersOptions
from ingress.responses import NOT_FORWARDED, Headers, UpstreamRules


def _hsts(options: HstsOptions) -> HeaderRule:
    value = f"max-age={options.max_age_s}"
    if options.include_subdomains:
        value += "; includeSubDomains"
    if options.preload:
        value += "; preload"
    return HeaderRule(value=value, mode=options.mode)


class SecurityHeaders:
    def __init__(self, options: SecurityHeadersOptions) -> None:
        rules: dict[str, HeaderRule] = {}
        for name, rule in (
            ("content-security-policy", options.content_security_policy),
            ("x-content-type-options", options.content_type_options),
            ("referrer-policy", options.referrer_policy),
            ("x-frame-options", options.frame_options),
        ):
            if rule is not None:
                rules[name] = rule
        rules.update(options.headers)
        own = {name: rule.value for name, rule in rules.items()}
        own.pop("content-security-policy", None)
        if options.gateway_content_security_policy is not None:
            own["content-security-policy"] = options.gateway_content_security_policy
        self._own = _encoded(own)
        self._proxied = _upstream_rules(rules)
        if options.hsts is not None:
            hsts = _hsts(options.hsts)
            self._own_tls = (*self._own, *_encoded({"strict-transport-security": hsts.value}))
            self._proxied_tls = _upstream_rules({**rules, "strict-transport-security": hsts})
        else:
            self._own_tls, self._proxied_tls = self._own, self._proxied

    def own(self, scheme: str) -> Headers:
        """For responses the gateway writes: problems, preflights, its endpoints."""
        return list(self._own_tls if scheme == "https" else self._own)

    def proxied(self, scheme: str) -> UpstreamRules:
        """For responses that carry an upstream's (or the cache's) headers."""
        return self._proxied_tls if scheme == "https" else self._proxied


def _encoded(values: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.encode(), value.encode("latin-1")) for name, value in values.items())


def _upstream_rules(rules: dict[str, HeaderRule]) -> UpstreamRules:
    override = {n: r.value for n, r in rules.items() if r.mode == "override"}
    keep = {n: r.value for n, r in rules.items() if r.mode == "keep_upstream"}
    return UpstreamRules(
        drop=NOT_FORWARDED | frozenset(override),
        fixed=_encoded(override),
        defaults=tuple((name, header) for name, header in zip(keep, _encoded(keep), strict=True)),
    )
