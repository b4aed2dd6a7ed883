"""The OpenAPI 3.1 document of the gateway's routes as one reader may see them: paths
and typed parameters from the route templates, security schemes from the routes'
authentication policies, the problem+json errors each route can answer, and the
upstreams' own operations merged under their routes."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from contracts.config import (
    _TEMPLATE_PARAM,
    ApiKeyPolicy,
    Config,
    IntrospectionPolicy,
    IpRulesPolicy,
    JwtPolicy,
    OAuthPolicy,
    Policy,
    RateLimitPolicy,
    Route,
    UpstreamTarget,
)
from ingress.apidocs.access import Reader
from ingress.apidocs.fetch import Fetched

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ANY_METHOD = ("get", "put", "post", "delete", "patch")  # a route without `methods`
WITH_BODY = frozenset({"put", "post", "patch"})
_TRAILING_PATH = re.compile(r"^(.*)\{([A-Za-z_][A-Za-z0-9_]*):path\}$")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "correlation_id": {"type": "string"},
    },
    "required": ["type", "title", "status"],
}
ERRORS = {
    "401": "Unauthenticated: no credential, or not a valid one",
    "403": "Authenticated but not allowed (scope, role, route or address)",
    "413": "Request body larger than the route accepts",
    "429": "Rate limit or quota exceeded; see Retry-After",
    "502": "The upstream failed or answered nothing usable",
    "503": "No worker or upstream available, or the gateway is overloaded; see Retry-After",
    "504": "No answer before the route's deadline",
}


def openapi_path(template: str) -> tuple[str, list[dict[str, Any]]]:
    """`/users/{id:int}/{rest:path}` -> (`/users/{id}/{rest}`, typed path parameters)."""
    parameters = []
    for m in _TEMPLATE_PARAM.finditer(template):
        schema: dict[str, Any] = {"type": "integer"} if m[2] == "int" else {"type": "string"}
        parameter = {"name": m[1], "in": "path", "required": True, "schema": schema}
        if m[2] == "path":
            parameter["description"] = "The rest of the path: may contain '/'"
            parameter["x-relaygate-converter"] = "path"
        parameters.append(parameter)
    return _TEMPLATE_PARAM.sub(lambda m: "{" + m[1] + "}", template), parameters


def build_openapi(config: Config, reader: Reader, fetched: Mapping[str, Fetched]) -> dict[str, Any]:
    """`fetched`: the upstream documents of the visible routes that name one, by route."""
    docs = config.docs
    paths: dict[str, dict[str, Any]] = {}
    schemes: dict[str, Any] = {}
    components: dict[str, dict[str, Any]] = {"schemas": {"Problem": PROBLEM_SCHEMA}}
    components["responses"] = {code: _error(code) for code in ERRORS}
    for route in config.routes:
        if not reader.sees(route.docs.roles):
            continue
        specs = [*config.policies, *route.policies]
        security = _security(config, specs, schemes)
        errors = _error_codes(route, specs)
        base = {"security": security, "responses": errors}
        merged = 0
        result = fetched.get(route.name)
        note = None
        if result is not None and result.error is not None:
            note = f"The upstream's API description ({result.url}) is unavailable: {result.error}"
        elif result is not None and result.document is not None:
            merged, note = _merge(route, result.document, base, paths, components)
        if not merged:
            _add_route(route, base, note, paths)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": docs.title, "version": docs.version},
        "servers": [{"url": server_url(config)}],
        "paths": paths,
        "components": {**components, "securitySchemes": schemes},
    }
    if docs.description:
        document["info"]["description"] = docs.description
    return document


def server_url(config: Config) -> str:
    """The gateway's public URL: docs.server_url, else the authorization server's issuer
    (its own default included), else the ingress address."""
    if config.docs.server_url is not None:
        return config.docs.server_url
    if config.auth_server is not None and config.auth_server.issuer is not None:
        return config.auth_server.issuer
    return f"http://{config.ingress.host}:{config.ingress.port}"


def _add_route(route: Route, base: dict[str, Any], note: str | None, paths: dict[str, Any]) -> None:
    """The route itself, one operation per method, when no upstream operations stand for it."""
    path, parameters = openapi_path(route.when.path)
    parameters += [
        {"name": name, "in": "header", "required": True, "schema": {"const": value}}
        for name, value in route.when.headers.items()
    ]
    item = paths.setdefault(path, {})
    if route.when.methods is None:
        item["x-relaygate-any-method"] = True
    description = "\n\n".join(filter(None, [route.docs.description, note]))
    for method in [m.lower() for m in route.when.methods or ANY_METHOD]:
        if method not in METHODS or method in item:  # an earlier route answers it first
            continue
        operation: dict[str, Any] = {
            "operationId": f"{route.name}.{method}",
            "summary": route.docs.summary or f"Route {route.name}",
            "tags": route.docs.tags or [route.name],
            "parameters": parameters,
            "responses": {"default": {"description": "The answer of the worker or upstream"}},
        }
        if description:
            operation["description"] = description
        if method in WITH_BODY:
            operation["requestBody"] = {
                "description": "Passed on as sent",
                "content": {"*/*": {"schema": {}}},
            }
        _finish(operation, route, base)
        item[method] = operation


def _finish(operation: dict[str, Any], route: Route, base: dict[str, Any]) -> None:
    operation["security"] = base["security"]
    responses = operation["responses"]
    for code in base["responses"]:
        responses.setdefault(code, {"$ref": f"#/components/responses/{code}"})
    operation["x-relaygate-route"] = route.name
    if route.when.host:
        operation["x-relaygate-host"] = route.when.host


def _merge(
    route: Route,
    document: dict[str, Any],
    base: dict[str, Any],
    paths: dict[str, Any],
    components: dict[str, dict[str, Any]],
) -> tuple[int, str | None]:
    """The upstream's operations that the route reaches, under the route's path: a route
    `/shop/{rest:path}` to upstream path `/{rest}` turns the upstream's `/items` into
    `/shop/items`. Its components join ours renamed `<route>.<name>`."""
    m = _TRAILING_PATH.match(route.when.path)
    if m is None:
        return 0, "Upstream operations are not merged: the route has no trailing {name:path}."
    outer, name = m[1], m[2]
    inner = outer
    if isinstance(route.to, UpstreamTarget) and route.to.path is not None:
        if not route.to.path.endswith("{" + name + "}"):
            return 0, f"Upstream operations are not merged: to.path does not end with {{{name}}}."
        inner = route.to.path[: -len(name) - 2]
    outer_path, outer_parameters = openapi_path(outer)
    prefix = f"{route.name}."
    allowed = {m.lower() for m in route.when.methods} if route.when.methods else set(METHODS)
    merged = 0
    for upstream_path, upstream_item in (document.get("paths") or {}).items():
        if not isinstance(upstream_item, dict) or not upstream_path.startswith(inner):
            continue
        item = _renamed(upstream_item, prefix)
        path = outer_path + upstream_path[len(inner) :]
        for method in METHODS:
            operation = item.get(method)
            taken = method in paths.get(path, {})
            if method not in allowed or taken or not isinstance(operation, dict):
                continue
            operation.pop("servers", None)  # callers go through the gateway
            operation_id = operation.get("operationId") or f"{method}{upstream_path}"
            operation["operationId"] = f"{prefix}{operation_id}"
            operation["parameters"] = [
                *outer_parameters,
                *item.get("parameters", []),
                *operation.get("parameters", []),
            ]
            operation.setdefault("responses", {})
            if route.docs.tags:
                operation["tags"] = route.docs.tags
            _finish(operation, route, base)
            paths.setdefault(path, {})[method] = operation
            merged += 1
    for kind, entries in (document.get("components") or {}).items():
        if kind != "securitySchemes" and isinstance(entries, dict):
            renamed = _renamed(entries, prefix)
            components.setdefault(kind, {}).update({prefix + k: v for k, v in renamed.items()})
    if not merged:
        return 0, f"The upstream's API description has no operation under {inner}."
    return merged, None


def _renamed(node: Any, prefix: str) -> Any:
    """A deep copy with local component references renamed to `<prefix><name>`."""
    if isinstance(node, dict):
        copied = {key: _renamed(value, prefix) for key, value in node.items()}
        ref = copied.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            kind, _, name = ref[len("#/components/") :].partition("/")
            copied["$ref"] = f"#/components/{kind}/{prefix}{name}"
        return copied
    if isinstance(node, list):
        return [_renamed(value, prefix) for value in node]
    return copy.copy(node)


def _security(config: Config, specs: list[Policy], schemes: dict[str, Any]) -> list[Any]:
    """Security requirements of a chain of policies: the required ones all apply; a chain
    of only optional bearer policies lets anyone through."""
    required: dict[str, list[str]] = {}
    optional: list[dict[str, list[str]]] = []
    for spec in specs:
        named = _scheme(config, spec)
        if named is None:
            continue
        name, scheme = named
        schemes[name] = scheme
        scopes = list(getattr(spec, "scopes", []))
        if isinstance(spec, JwtPolicy | IntrospectionPolicy) and spec.optional:
            optional.append({name: scopes})
        else:
            required[name] = sorted({*required.get(name, []), *scopes})
    if required:
        return [required]
    return [*optional, {}] if optional else []


def _scheme(config: Config, spec: Policy) -> tuple[str, dict[str, Any]] | None:
    if isinstance(spec, JwtPolicy):
        issuers = ", ".join(issuer.issuer for issuer in config.issuers.values())
        scheme = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        return "jwt", {**scheme, "description": f"A JWT of one of: {issuers}"}
    if isinstance(spec, IntrospectionPolicy):
        name = "bearer." + _UNSAFE_NAME.sub("_", spec.server)
        description = f"An access token of authorization server {spec.server}"
        return name, {"type": "http", "scheme": "bearer", "description": description}
    if isinstance(spec, ApiKeyPolicy):
        name = "api_key" if spec.header == "X-API-Key" else f"api_key.{spec.header.lower()}"
        description = "An API key; `Authorization: ApiKey <key>` works too"
        return name, {
            "type": "apiKey",
            "in": "header",
            "name": spec.header,
            "description": description,
        }
    if isinstance(spec, OAuthPolicy) and config.auth_server is not None:
        issuer = config.auth_server.issuer or server_url(config)
        scopes = {scope: scope for scope in config.auth_server.scopes}
        flow = {"tokenUrl": f"{issuer}/oauth/token", "scopes": scopes}
        return "oauth", {"type": "oauth2", "flows": {"clientCredentials": flow}}
    return None


def _error_codes(route: Route, specs: list[Policy]) -> list[str]:
    codes = {"413", "503", "504"}
    if isinstance(route.to, UpstreamTarget):
        codes.add("502")
    for spec in specs:
        if isinstance(spec, RateLimitPolicy):
            codes.add("429")
        elif isinstance(spec, IpRulesPolicy):
            codes.add("403")
        else:
            codes |= {"401", "403"}
    return sorted(codes)


def _error(code: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERRORS[code],
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    if code in ("429", "503"):
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    elif code == "401":
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return response
