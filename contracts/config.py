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
    cache_max_bytes: int = Field(
        64 * MiB, ge=0, description="Memory bound of the in-memory response cache (LRU)."
    )


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


class Limit(_Model):
    """At most `requests` in any `window_s` seconds (a sliding window, not a calendar one)."""

    requests: int = Field(ge=1)
    window_s: float = Field(gt=0, le=86_400)


class Quota(_Model):
    """Calendar quotas (UTC days and months)."""

    daily: int | None = Field(None, ge=1)
    monthly: int | None = Field(None, ge=1)


class Tier(_Model):
    """A class of caller (free, partner, internal, …) with its own limits and quotas."""

    limits: list[Limit] = Field(default_factory=list)
    quota: Quota = Quota()


class CallerConfig(_Model):
    """How the ingress tells a caller's tier until authentication assigns one."""

    default_tier: str | None = Field(None, description="Tier of a caller nothing else names.")
    tier_header: str | None = Field(
        None, description="A header naming the tier. Trust it only behind your own edge."
    )
    networks: dict[str, str] = Field(
        default_factory=dict, description="Client address CIDR -> tier, first match wins."
    )

    @field_validator("networks")
    @classmethod
    def _cidrs(cls, networks: dict[str, str]) -> dict[str, str]:
        import ipaddress

        for cidr in networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR: {exc}") from None
        return networks


_KEY_PART = r"^(consumer|api_key|tenant|client_address|route|header:[A-Za-z0-9-]+)$"


class RateLimitPolicy(_Model):
    """Exact across ingress nodes when `state.url` is Redis; per node otherwise."""

    type: Literal["rate_limit"]
    name: str = Field(
        "default", pattern=r"^[A-Za-z0-9_-]+$", description="Shown in RateLimit-Policy."
    )
    key: list[Annotated[str, Field(pattern=_KEY_PART)]] = Field(
        default_factory=lambda: ["client_address"],
        min_length=1,
        description="What one counter is per: consumer, api_key, tenant, client_address, "
        "route, header:<name>.",
    )
    limits: list[Limit] = Field(
        default_factory=list, description="Unset: the limits of the caller's tier."
    )
    quotas: bool = Field(True, description="Also count the caller's tier quotas.")
    on_store_error: Literal["local", "closed"] = Field(
        "local",
        description="Redis unreachable: `local` limits per node, `closed` answers 503.",
    )


Policy = Annotated[RateLimitPolicy, Field(discriminator="type")]


class StateConfig(_Model):
    url: str | None = Field(
        None,
        description="redis://host:port/db shares state across ingress nodes; unset: in memory.",
    )
    timeout_ms: int = Field(250, ge=1, description="Per Redis call; then the fallback applies.")

    @field_validator("url")
    @classmethod
    def _redis(cls, url: str | None) -> str | None:
        if url is not None and url.split("://", 1)[0] not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url


class CacheOptions(_Model):
    """Response caching at the ingress (a subset of RFC 9111; see the README)."""

    ttl_s: float = Field(
        60.0, ge=0, le=86_400 * 30, description="Freshness when the upstream gives none."
    )
    max_entry_bytes: int = Field(MiB, ge=0, description="Larger bodies are not stored.")
    vary_on_principal: bool = Field(
        True,
        description="Key requests with Authorization by its hash; false: such requests bypass.",
    )


class Route(_Model):
    name: str = Field(pattern=_ROUTE_NAME)
    when: When
    to: Target
    policies: list[Policy] = Field(
        default_factory=list, description="Run after the global policies, in order."
    )
    timeout_ms: int | None = Field(None, ge=1, description="Unset: ingress.timeout_ms.")
    max_body_bytes: int | None = Field(None, ge=0, description="Unset: ingress.max_body_bytes.")
    cache: CacheOptions | None = Field(None, description="Unset: responses are not cached.")


def _http_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return url.rstrip("/")


class UpstreamInstance(_Model):
    """One server of an upstream."""

    url: str = Field(description="Base URL, e.g. http://10.0.0.5:8000 or http://orders:8000/api")
    group: int = Field(
        0,
        ge=0,
        description="Failover order: 0 is the primary group, 1 the first backup, and so on. "
        "Requests go to the lowest group that has an available instance.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _http_base_url(url)


class HealthCheck(_Model):
    """Active checks: `GET path` on every instance each interval."""

    path: str = Field("/healthz", pattern=r"^/", description="Any 2xx or 3xx answer is healthy.")
    interval_ms: int = Field(2_000, ge=10)
    timeout_ms: int = Field(1_000, ge=1)
    healthy_threshold: int = Field(2, ge=1, description="Passes in a row that readmit.")
    unhealthy_threshold: int = Field(2, ge=1, description="Failures in a row that remove.")


class OutlierDetection(_Model):
    """Passive checks: an instance failing `consecutive_failures` requests in a row (5xx,
    refused or reset connection, timeout) is ejected for `eject_ms`, then readmitted."""

    consecutive_failures: int = Field(5, ge=1)
    eject_ms: int = Field(30_000, ge=1)


class CircuitBreakerOptions(_Model):
    """Per upstream: opens when at least `min_calls` requests in the last `window_s`
    seconds failed at `failure_rate` or more; then answers 503 at once for `open_ms`,
    lets `half_open_calls` trial requests through, and closes if they all succeed."""

    window_s: float = Field(10.0, gt=0, le=3600)
    min_calls: int = Field(20, ge=1)
    failure_rate: float = Field(0.5, gt=0, le=1)
    open_ms: int = Field(5_000, ge=1)
    half_open_calls: int = Field(3, ge=1)


class RetryPolicy(_Model):
    """Retries of failed attempts (5xx, refused or reset connection), on another instance
    when there is one; only for GET, HEAD, OPTIONS, PUT, DELETE or requests carrying
    `Idempotency-Key`, and within the budget."""

    attempts: int = Field(2, ge=1, le=10, description="Tries per request; 1: no retries.")
    budget_ratio: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Retries may add at most this share of the requests of the last 10 s.",
    )
    min_retries: int = Field(
        3, ge=0, description="Retries allowed per 10 s whatever the ratio, for low traffic."
    )


class HttpUpstream(_Model):
    type: Literal["http"] = "http"
    url: str | None = Field(
        None,
        description="Base URL, e.g. http://orders:8000 or http://10.0.0.5:8000/api: "
        "shorthand for one target. Give `url` or `targets`.",
    )
    targets: list[UpstreamInstance] | None = Field(
        None, min_length=1, description="The instances; give `url` or `targets`."
    )
    balance: Literal["round_robin", "least_outstanding", "consistent_hash"] = Field(
        "round_robin", description="How an instance is chosen within a group."
    )
    hash_key: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9-]+$",
        description="consistent_hash: the request header to hash; unset: the client address.",
    )
    health: HealthCheck | None = Field(None, description="Unset: no active checks.")
    outlier: OutlierDetection = OutlierDetection()
    breaker: CircuitBreakerOptions = CircuitBreakerOptions()
    retries: RetryPolicy = RetryPolicy()
    max_connections: int = Field(256, ge=1)
    connect_timeout_ms: int = Field(2_000, ge=1)
    max_response_bytes: int = Field(16 * MiB, ge=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return None if url is None else _http_base_url(url)

    @model_validator(mode="after")
    def _one_target_list(self) -> HttpUpstream:
        if (self.url is None) == (self.targets is None):
            raise ValueError("give either `url` (one instance) or `targets`, not both or neither")
        urls = [target.url for target in self.targets or ()]
        if len(urls) != len(set(urls)):
            raise ValueError("each target URL must appear once")
        return self

    def instances(self) -> list[UpstreamInstance]:
        """`targets`, or the one instance that `url` stands for."""
        if self.targets is not None:
            return list(self.targets)
        assert self.url is not None  # the validator makes it so
        return [UpstreamInstance(url=self.url)]


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


DEFAULT_RETRY_SCHEDULE_S = [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class BridgeConfig(_Model):
    """The webhook bridge: delivers the durable event stream to registered endpoints."""

    enabled: bool = Field(False, description="`relaygate up` starts the bridge.")
    host: str = Field("127.0.0.1", description="Address of the bridge's admin API.")
    port: int = Field(8083, ge=0, le=65535, description="Port of the bridge's admin API.")
    retry_schedule_s: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE_S),
        min_length=1,
        max_length=50,
        description="Delay before each attempt (the first is usually 0); its length is "
        "the number of attempts before a message goes to the dead-letter queue.",
    )
    jitter: float = Field(
        0.1, ge=0, le=1, description="Each retry delay is randomised by up to ± this share."
    )
    timeout_ms: int = Field(10_000, ge=1, description="Per delivery attempt, connect to answer.")
    redeliver_after_s: float = Field(
        30.0,
        gt=0,
        description="A delivery not finished by then (the bridge died) is attempted again; "
        "keep it above timeout_ms.",
    )
    max_concurrency: int = Field(
        8, ge=1, le=1024, description="Default attempts in flight per endpoint."
    )
    rate_per_s: float | None = Field(
        None, gt=0, description="Default attempts per second per endpoint; unset: no limit."
    )
    allow_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs endpoints may resolve to although they are not public "
        "(loopback, private, link-local, ...). Empty: public addresses only.",
    )
    event_retention_s: float = Field(
        7 * 86_400.0, gt=0, description="How long the event stream keeps events (for replay)."
    )
    rotation_grace_s: float = Field(
        86_400.0, ge=0, description="Default time an old secret keeps signing after a rotation."
    )

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        import ipaddress

        for cidr in networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR: {exc}") from None
        return networks


class Config(BaseSettings):
    """The whole gateway configuration."""

    model_config = SettingsConfigDict(
        env_prefix="RELAYGATE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    bus: BusConfig = BusConfig()
    ingress: IngressConfig = IngressConfig()
    admin: AdminConfig = AdminConfig()
    bridge: BridgeConfig = BridgeConfig()
    state: StateConfig = StateConfig()
    policies: list[Policy] = Field(
        default_factory=list, description="Run on every route, before the route's own."
    )
    tiers: dict[str, Tier] = Field(default_factory=dict)
    caller: CallerConfig = CallerConfig()
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
        data = self.model_dump(include={"routes", "upstreams", "policies", "tiers", "caller"})
        problems = reference_problems(data["routes"], data["upstreams"])
        problems += tier_problems(data)
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
        for section, key in (("bus", "url"), ("state", "url")):
            if data[section][key]:
                data[section][key] = redact_url(data[section][key])
        for upstream in data["upstreams"].values():
            if upstream["url"]:
                upstream["url"] = redact_url(upstream["url"])
            for target in upstream["targets"] or []:
                target["url"] = redact_url(target["url"])
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


def tier_problems(data: dict[str, Any]) -> list[str]:
    """Tier names must exist; a rate limit without limits needs tiers that have some."""
    tiers = data.get("tiers") or {}
    problems: list[str] = []
    caller = data.get("caller") or {}
    default = caller.get("default_tier")
    if default is not None and default not in tiers:
        problems.append(f"caller.default_tier: unknown tier {default!r}")
    for cidr, tier in (caller.get("networks") or {}).items():
        if tier not in tiers:
            problems.append(f"caller.networks.{cidr}: unknown tier {tier!r}")
    places = [(f"policies[{i}]", p) for i, p in enumerate(data.get("policies") or [])]
    for r, route in enumerate(data.get("routes") or []):
        places += [
            (f"routes[{r}].policies[{i}]", p) for i, p in enumerate(route.get("policies") or [])
        ]
    tiers_have_limits = any(t.get("limits") for t in tiers.values())
    for where, policy in places:
        if (
            policy.get("type") == "rate_limit"
            and not policy.get("limits")
            and not tiers_have_limits
        ):
            problems.append(f"{where}.limits: give limits, or define tiers with limits")
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
