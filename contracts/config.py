"""The typed configuration: one YAML file, environment overrides (`RELAYGATE_`, `__`
for nesting), errors reported with their YAML path. `relaygate check` uses this."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from contracts.topics import NAME_PATTERN

MiB = 1024 * 1024
_ROUTE_NAME = r"^[a-z0-9][a-z0-9_-]*$"
_TEMPLATE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(str|path|int))?\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaOptions(_Model):
    create_topics: bool = Field(True, description="Create missing topics on first use.")
    partitions: int = Field(3, ge=1, description="Partitions of topics relaygate creates.")
    replication_factor: int = Field(1, ge=1)
    acks: Literal["all", "1", "0"] = "all"
    idempotence: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: on where the broker supports idempotent producers."
    )

    @field_validator("acks", mode="before")
    @classmethod
    def _acks_text(cls, value: object) -> object:
        # YAML and environment variables give 1 / "1" alike.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("idempotence", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted on/off as true/false.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    max_message_bytes: int = Field(16 * MiB, ge=MiB)
    fetch_max_wait_ms: int = Field(
        10,
        ge=1,
        le=60_000,
        description="How long an empty fetch waits on the broker. Brokers that answer "
        "early when data arrives (Apache Kafka) can take 500; Tansu cannot.",
    )


class EmbeddedNats(_Model):
    port: int | None = Field(None, ge=0, le=65535, description="None: a free port.")
    store_dir: Path | None = Field(None, description="JetStream data; None: a temporary folder.")
    max_payload: int = Field(8 * MiB, ge=MiB, le=64 * MiB)


class BusConfig(_Model):
    url: str | None = Field(
        None,
        description="nats://host:port or kafka://host:port[,host:port]. "
        "Unset: `relaygate up` starts an embedded NATS server.",
    )
    prefix: str = Field("rg", pattern=NAME_PATTERN)
    kafka: KafkaOptions = KafkaOptions()
    embedded: EmbeddedNats = EmbeddedNats()

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is not None and url.split("://", 1)[0] not in ("nats", "tls", "kafka", "memory"):
            raise ValueError("must start with nats://, tls://, kafka:// or memory://")
        return url


class IngressConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    node_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$", description="Unset: random per process."
    )
    max_pending: int = Field(10_000, ge=1, description="Requests waiting for replies at once.")
    timeout_ms: int = Field(30_000, ge=1, description="Default deadline of a request.")
    max_body_bytes: int = Field(4 * MiB, ge=0, description="Default request body limit.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After on 503 backpressure.")


class AdminConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)


class When(_Model):
    path: str = Field(description="Path template: /users/{id}, /files/{rest:path}.")
    methods: list[str] | None = Field(None, description="Unset: any method.")
    host: str | None = Field(None, description="Exact host or *.example.com.")
    headers: dict[str, str] = Field(default_factory=dict, description="Exact header values.")

    @field_validator("path")
    @classmethod
    def _template(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("must start with '/'")
        stripped = _TEMPLATE_PARAM.sub("", path)
        if "{" in stripped or "}" in stripped:
            raise ValueError("bad parameter: use {name} or {name:path|str|int}")
        names = [m[1] for m in _TEMPLATE_PARAM.finditer(path)]
        if len(names) != len(set(names)):
            raise ValueError("parameter names must be unique")
        return path

    @field_validator("methods")
    @classmethod
    def _upper(cls, methods: list[str] | None) -> list[str] | None:
        if methods is None:
            return None
        if not methods:
            raise ValueError("list at least one method, or leave methods out for any")
        for method in methods:
            if not re.fullmatch(r"[A-Za-z]+", method):
                raise ValueError(f"{method!r} is not an HTTP method")
        return [m.upper() for m in methods]


class WorkerTarget(_Model):
    """Publish to `<prefix>.req.<topic>`; any worker subscribed there answers."""

    type: Literal["worker"]
    topic: str = Field(pattern=NAME_PATTERN)


class UpstreamTarget(_Model):
    """Publish to `<prefix>.req.<route name>`; the routing worker forwards to `upstream`."""

    type: Literal["upstream"]
    upstream: str
    path: str | None = Field(
        None,
        pattern=r"^/",
        description="Upstream path template using the route's parameters, starting with '/'; "
        "unset: the request's path unchanged.",
    )


Target = Annotated[WorkerTarget | UpstreamTarget, Field(discriminator="type")]


class Route(_Model):
    name: str = Field(pattern=_ROUTE_NAME)
    when: When
    to: Target
    timeout_ms: int | None = Field(None, ge=1, description="Unset: ingress.timeout_ms.")
    max_body_bytes: int | None = Field(None, ge=0, description="Unset: ingress.max_body_bytes.")


class HttpUpstream(_Model):
    type: Literal["http"] = "http"
    url: str = Field(description="Base URL, e.g. http://orders:8000 or http://10.0.0.5:8000/api")
    max_connections: int = Field(256, ge=1)
    connect_timeout_ms: int = Field(2_000, ge=1)
    max_response_bytes: int = Field(16 * MiB, ge=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url.rstrip("/")


class EchoWorker(_Model):
    type: Literal["echo"]
    topics: list[str] = Field(default_factory=lambda: ["echo"])
    replicas: int = Field(1, ge=1, le=64)


class RoutingWorker(_Model):
    type: Literal["routing"]
    replicas: int = Field(1, ge=1, le=64)


class ModuleWorker(_Model):
    """A team's worker written with the SDK: `package.module:worker`."""

    type: Literal["module"]
    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    replicas: int = Field(1, ge=1, le=64)


WorkerSpec = Annotated[EchoWorker | RoutingWorker | ModuleWorker, Field(discriminator="type")]


class Config(BaseSettings):
    """The whole gateway configuration."""

    model_config = SettingsConfigDict(
        env_prefix="RELAYGATE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    bus: BusConfig = BusConfig()
    ingress: IngressConfig = IngressConfig()
    admin: AdminConfig = AdminConfig()
    routes: list[Route] = Field(default_factory=list)
    upstreams: dict[str, HttpUpstream] = Field(default_factory=dict)
    workers: list[WorkerSpec] = Field(
        default_factory=list,
        description="What `relaygate up` starts; a routing worker is added when upstream "
        "routes need one and none is listed.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the file.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _references(self) -> Config:
        data = self.model_dump(include={"routes", "upstreams"})
        problems = reference_problems(data["routes"], data["upstreams"])
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def effective_workers(self) -> list[EchoWorker | RoutingWorker | ModuleWorker]:
        """`workers`, plus a routing worker when upstream routes need one and none is listed."""
        workers = list(self.workers)
        needs_routing = any(isinstance(r.to, UpstreamTarget) for r in self.routes)
        if needs_routing and not any(isinstance(w, RoutingWorker) for w in workers):
            workers.append(RoutingWorker(type="routing"))
        return workers

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data, with credentials in URLs masked."""
        data = self.model_dump(mode="json")
        if data["bus"]["url"]:
            data["bus"]["url"] = redact_url(data["bus"]["url"])
        for upstream in data["upstreams"].values():
            upstream["url"] = redact_url(upstream["url"])
        return data


def reference_problems(routes: Any, upstreams: Any) -> list[str]:
    """What refers to something that is not there (or twice), as `path: message` lines.

    Reads plain data defensively, so that `relaygate check` can run it on the raw file
    and report these together with field errors, which stop pydantic before them."""
    problems: list[str] = []
    if not isinstance(routes, list):
        return problems
    names = sorted(upstreams) if isinstance(upstreams, dict) else []
    seen: set[str] = set()
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        name = route.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(f"routes[{i}].name: duplicate route name {name!r}")
            seen.add(name)
        target, when = route.get("to"), route.get("when")
        if not isinstance(target, dict) or target.get("type") != "upstream":
            continue
        upstream = target.get("upstream")
        if isinstance(upstream, str) and upstream not in names:
            known = ", ".join(names) or "none defined"
            problems.append(
                f"routes[{i}].to.upstream: unknown upstream {upstream!r} (upstreams: {known})"
            )
        path = target.get("path")
        if isinstance(path, str) and isinstance(when, dict) and isinstance(when.get("path"), str):
            params = {m[1] for m in _TEMPLATE_PARAM.finditer(when["path"])}
            for m in _TEMPLATE_PARAM.finditer(path):
                if m[1] not in params:
                    problems.append(
                        f"routes[{i}].to.path: parameter {{{m[1]}}} is not in when.path"
                    )
    return problems


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"***:***@{host}"))


# ---------------------------------------------------------------- loading and errors


class ConfigError(Exception):
    """A config file that cannot be used; `problems` are `path: message` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def load_config(path: str | Path | None) -> Config:
    """Read, merge with RELAYGATE_ environment overrides, validate."""
    if path is None:
        return _validate({}, "<defaults>", None)
    import yaml

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
        lines = _line_index(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}invalid YAML: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): must be a mapping with bus, ingress, routes, …"])
    return _validate(data, source, lines)


def _validate(data: dict[str, Any], source: str, lines: dict[str, int] | None) -> Config:
    try:
        return Config(**data)
    except ValidationError as exc:
        problems = format_errors(exc, data, lines)
        # Field errors stop pydantic before the cross-reference check: run it on the
        # file itself so that one `relaygate check` reports everything.
        for problem in reference_problems(data.get("routes"), data.get("upstreams")):
            line = _with_line(problem, lines)
            if line not in problems:
                problems.append(line)
        raise ConfigError(source, problems) from None
    except SettingsError as exc:  # e.g. malformed JSON in a RELAYGATE_… variable
        raise ConfigError("environment", [f"{exc}: {exc.__cause__ or ''}".rstrip(": ")]) from None


def format_errors(
    exc: ValidationError, data: dict[str, Any], lines: dict[str, int] | None = None
) -> list[str]:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if not loc:
            # Cross-reference checks (`Config._references`) write their own `path: …` lines.
            problems.extend(_with_line(line, lines) for line in message.splitlines())
            continue
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        problems.append(_with_line(f"{yaml_path(loc, data)}: {_lower_first(message)}", lines))
    return problems


def _lower_first(message: str) -> str:
    return message[:1].lower() + message[1:]


def yaml_path(loc: list[int | str], data: Any) -> str:
    """`['routes', 2, 'to', 'worker', 'topic']` -> `routes[2].to.topic`. Pydantic puts
    discriminator tags ('worker') in the location; they are not keys of the file."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        out += f".{part}" if out else part
        node = node.get(part) if isinstance(node, dict) else None
    return out


def _line_index(root: Any) -> dict[str, int]:
    """YAML path -> 1-based line, for error messages."""
    import yaml

    index: dict[str, int] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = f"{path}.{key.value}" if path else str(key.value)
                index[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = f"{path}[{i}]"
                index[sub] = item.start_mark.line + 1
                walk(item, sub)

    if root is not None:
        walk(root, "")
    return index


def _with_line(problem: str, lines: dict[str, int] | None) -> str:
    if not lines:
        return problem
    path = problem.split(": ", 1)[0]
    while path:
        if path in lines:
            return f"{problem} (line {lines[path]})"
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return problem


def json_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "relaygate configuration"
    return schema
