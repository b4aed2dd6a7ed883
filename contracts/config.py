"""The typed configuration: one YAML file, environment overrides (`RELAYGATE_`, `__`
for nesting), errors reported with their YAML path. `relaygate check` uses this."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
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


KiB = 1024


class TlsConfig(_Model):
    """HTTPS on the data plane. The certificate and key files are watched: a changed pair is
    loaded for new handshakes without a restart."""

    cert_file: Path = Field(description="PEM certificate chain, leaf first.")
    key_file: Path = Field(description="PEM private key of the certificate (unencrypted).")
    client_auth: Literal["none", "optional", "required"] = Field(
        "none",
        description="Mutual TLS: ask clients for a certificate signed by client_ca_file. "
        "optional: a client without one is served too; required: it is refused.",
    )
    client_ca_file: Path | None = Field(
        None, description="PEM bundle of the CAs that sign client certificates."
    )
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version accepted.")
    reload_interval_s: float = Field(
        5.0, gt=0, le=3600, description="How often the files are checked for changes."
    )
    redirect_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Also listen for plain HTTP on this port and answer 308 to the https URL.",
    )
    public_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="The HTTPS port clients see, for redirect URLs; unset: ingress.port.",
    )

    @model_validator(mode="after")
    def _client_ca(self) -> TlsConfig:
        if self.client_auth != "none" and self.client_ca_file is None:
            raise ValueError(f"client_auth {self.client_auth} needs client_ca_file")
        return self


class IngressLimits(_Model):
    """Limits the data plane enforces per connection and per request, before any route."""

    max_header_bytes: int = Field(
        32 * KiB, ge=KiB, description="Request header fields in total (431 past it)."
    )
    max_header_count: int = Field(100, ge=8, description="Request header fields (431 past it).")
    max_url_bytes: int = Field(8 * KiB, ge=256, description="Request target length (414 past it).")
    max_json_depth: int | None = Field(
        64, ge=1, description="Nesting of a JSON request body (400 past it); null: not checked."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to send a request's headers, then cut off."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest pause between two reads of a request body."
    )
    keepalive_timeout_s: int = Field(
        5, ge=1, description="An idle keep-alive connection is closed after this."
    )
    max_connections: int | None = Field(
        10_000, ge=1, description="Open client connections per node; null: no cap."
    )
    max_connections_per_address: int | None = Field(
        256, ge=1, description="Open connections from one client IP; null: no cap."
    )


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
    tls: TlsConfig | None = Field(None, description="Unset: the data plane speaks plain HTTP.")
    limits: IngressLimits = Field(
        IngressLimits(), description="Connection and request-head limits, slow-client timeouts."
    )
    ws_ping_interval_s: float = Field(
        20.0, ge=0, description="WebSocket keep-alive ping interval; 0: no pings."
    )
    ws_ping_timeout_s: float = Field(
        20.0, gt=0, description="A socket whose pong is this late is closed (1011)."
    )


class AdminConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    token: str | None = Field(
        None,
        min_length=16,
        description="Bearer token every admin call must send (except /healthz and /readyz). "
        "Unset: no token; keep the admin API on loopback then.",
    )


LogLevel = Literal["debug", "info", "warning", "error"]


class LogsConfig(_Model):
    """Structured logs: JSON lines, or text for people. Never blocks the event loop."""

    format: Literal["json", "text", "auto"] = Field(
        "auto", description="auto: text when stderr is a terminal, JSON lines otherwise."
    )
    level: LogLevel | None = Field(
        None, description="Level of every component; unset: the CLI's --log-level (info)."
    )
    levels: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.]*$")], LogLevel] = Field(
        default_factory=dict,
        description="Per component (ingress, access, bus, worker, routing, ratelimit, …): "
        "its level, overriding `level`.",
    )
    access_log: bool = Field(True, description="One line per request at the ingress.")
    redact_fields: list[str] = Field(
        default_factory=list,
        description="More field names (body or structured-log fields) whose values are "
        "replaced by [redacted]; authorization, cookies, API keys, passwords, secrets and "
        "tokens always are.",
    )


class TracingConfig(_Model):
    """OpenTelemetry traces, exported over OTLP/HTTP as the standard OTEL_* variables say
    (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER[_ARG], OTEL_SERVICE_NAME, …)."""

    enabled: bool | None = Field(
        None,
        description="Unset: on when OTEL_EXPORTER_OTLP_ENDPOINT (or …_TRACES_ENDPOINT) is set. "
        "OTEL_SDK_DISABLED=true turns it off whatever this says.",
    )
    sample_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of new traces recorded (a sampled client's trace always is); "
        "unset: OTEL_TRACES_SAMPLER, default all.",
    )
    producer_spans: bool = Field(
        False,
        description="Also record a PRODUCER span per bus request (publish until the reply), "
        "beside the consumer's span. Off: the requesting span (the ingress's SERVER span) "
        "carries the messaging attributes, one span fewer per request.",
    )


class MetricsConfig(_Model):
    """Prometheus metrics at /metrics: on the admin port of an ingress node, and on a
    listener of its own in each worker process."""

    enabled: bool = Field(True, description="Serve /metrics.")
    worker_host: str = Field("127.0.0.1", description="Where a worker's /metrics listens.")
    worker_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="A worker's /metrics port (0: any free one); unset: no listener, unless "
        "`relaygate worker --metrics-port` gives one (`relaygate up` does, per replica).",
    )


class TelemetryConfig(_Model):
    logs: LogsConfig = LogsConfig()
    tracing: TracingConfig = TracingConfig()
    metrics: MetricsConfig = MetricsConfig()


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
    priority: int = Field(
        0,
        ge=0,
        le=100,
        description="Admission under overload: higher goes first, may take the reserved "
        "slots and may displace queued requests of lower tiers. 0: the lowest.",
    )


class CallerConfig(_Model):
    """How the ingress tells a caller's tier until authentication assigns one."""

    default_tier: str | None = Field(None, description="Tier of a caller nothing else names.")
    tier_header: str | None = Field(
        None, description="A header naming the tier. Trust it only behind your own edge."
    )
    networks: dict[str, str] = Field(
        default_factory=dict, description="Client address CIDR -> tier, first match wins."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of your own proxies and load balancers. Only a direct peer in "
        "these may say who the client is (Forwarded, X-Forwarded-For) and whether it came "
        "over TLS (X-Forwarded-Proto); unset: the direct peer is the client.",
    )

    @field_validator("networks")
    @classmethod
    def _cidrs(cls, networks: dict[str, str]) -> dict[str, str]:
        _check_cidrs(list(networks))
        return networks

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_cidrs(cls, cidrs: list[str]) -> list[str]:
        return _check_cidrs(cidrs)


def _check_cidrs(cidrs: list[str]) -> list[str]:
    import ipaddress

    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not a CIDR: {exc}") from None
    return cidrs


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


class IpRulesPolicy(_Model):
    """Client address allow and deny lists (IPv4 and IPv6); 403 when refused. The
    address is the one `caller.trusted_proxies` makes believable."""

    type: Literal["ip_rules"]
    allow: list[str] = Field(
        default_factory=list, description="CIDRs; when given, only addresses in them pass."
    )
    deny: list[str] = Field(
        default_factory=list, description="CIDRs refused; deny wins over allow."
    )

    @field_validator("allow", "deny")
    @classmethod
    def _cidrs(cls, cidrs: list[str]) -> list[str]:
        return _check_cidrs(cidrs)

    @model_validator(mode="after")
    def _some_rule(self) -> IpRulesPolicy:
        if not self.allow and not self.deny:
            raise ValueError("give `allow`, `deny` or both")
        return self


class ApiKeyPolicy(_Model):
    """Authenticate with an API key issued through the admin API (`/admin/keys`)."""

    type: Literal["api_key"]
    header: str = Field(
        "X-API-Key",
        pattern=r"^[A-Za-z0-9-]+$",
        description="Header carrying the key; `Authorization: ApiKey <key>` works too.",
    )
    scopes: list[str] = Field(
        default_factory=list, description="Scopes the key must all hold; else 403."
    )


class OAuthPolicy(_Model):
    """Authenticate with an access token of the gateway's own authorization server
    (`auth_server`): signature by its keys, not expired, not revoked."""

    type: Literal["oauth"]
    scopes: list[str] = Field(
        default_factory=list, description="Scopes the token must all carry; else 403."
    )


JwsAlgorithm = Literal[
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "HS256",
    "HS384",
    "HS512",
]


class ClaimMapping(_Model):
    """Which claims (of a JWT, or of an introspection answer) fill the principal. A name
    is looked up as is, then as a dotted path (`realm_access.roles`); for lists, the
    first claim present wins. A string value of `roles` or `scopes` is split on spaces."""

    subject: list[str] = Field(
        default_factory=lambda: ["sub", "client_id"],
        min_length=1,
        description="Claims naming the subject; a token without any of them is refused.",
    )
    tenant: str | None = Field(None, description="Claim naming the tenant.")
    roles: list[str] = Field(default_factory=lambda: ["roles"], description="Role claims.")
    scopes: list[str] = Field(
        default_factory=lambda: ["scope", "scp"],
        description="Scope claims: space-separated `scope` (RFC 8693) or a `scp` list.",
    )
    tier: str | None = Field(None, description="Claim naming the caller's tier.")


class StaticKey(_Model):
    """A verification key given in the config: a PEM public key or certificate, or a JWK."""

    kid: str | None = Field(
        None, description="Key id tokens name in `kid`; a key without one matches any kid."
    )
    pem: str | None = Field(None, description="PEM public key or X.509 certificate.")
    jwk: dict[str, Any] | None = Field(None, description="A public JWK (RFC 7517), or `oct`.")

    @model_validator(mode="after")
    def _one_form(self) -> StaticKey:
        if (self.pem is None) == (self.jwk is None):
            raise ValueError("give either `pem` or `jwk`")
        if self.pem is not None:
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            data = self.pem.encode()
            try:
                if b"CERTIFICATE" in data:
                    x509.load_pem_x509_certificate(data)
                else:
                    load_pem_public_key(data)
            except ValueError as exc:
                raise ValueError(f"pem: not a PEM public key or certificate ({exc})") from None
        elif self.jwk is not None and not isinstance(self.jwk.get("kty"), str):
            raise ValueError("jwk: a JWK needs `kty`")
        return self


class JwtIssuer(_Model):
    """An identity provider whose JWTs the ingress accepts. The accepted algorithms come
    from here, never from the token."""

    issuer: str = Field(description="The exact `iss` of its tokens; it also selects the issuer.")
    audience: list[str] = Field(min_length=1, description="Tokens must name one of these in `aud`.")
    algorithms: list[JwsAlgorithm] = Field(
        default_factory=lambda: list[JwsAlgorithm](["RS256"]),
        min_length=1,
        description="Accepted `alg` values.",
    )
    jwks_url: str | None = Field(None, description="Where its JSON Web Key Set is served.")
    keys: list[StaticKey] = Field(
        default_factory=list, description="Keys given here (with or without `jwks_url`)."
    )
    jwks_refresh_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="A token naming an unknown `kid` refetches the key set at most this often.",
    )
    jwks_max_age_s: float = Field(
        600.0, gt=0, description="Keys are refetched in the background after this age."
    )
    jwks_timeout_ms: int = Field(2_000, ge=1, description="Per key-set fetch.")
    leeway_s: float = Field(30.0, ge=0, le=600, description="Clock skew allowed on exp/nbf/iat.")
    typ: list[str] = Field(
        default_factory=list,
        description="Accepted `typ` header values (case-insensitive, `application/` optional), "
        "e.g. [at+jwt, JWT]; empty: any or none.",
    )
    required_claims: list[str] = Field(
        default_factory=list, description="Claims every token must carry (`exp` always is)."
    )
    claims: ClaimMapping = ClaimMapping()
    tenant: str | None = Field(None, description="Tenant of its principals without a tenant claim.")
    cache_s: float = Field(
        60.0, ge=0, le=3_600, description="A verified token is reused this long (at most to exp)."
    )

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, url: str | None) -> str | None:
        return None if url is None else _http_url(url)

    @model_validator(mode="after")
    def _keys_and_algorithms(self) -> JwtIssuer:
        if self.jwks_url is None and not self.keys:
            raise ValueError("give `jwks_url` or `keys`")
        hmac = {a for a in self.algorithms if a.startswith("HS")}
        if hmac and len(hmac) != len(self.algorithms):
            raise ValueError("do not mix HS* with public-key algorithms in one issuer")
        return self


class AuthorizationServer(_Model):
    """An OAuth 2.0 authorization server whose opaque tokens the ingress checks with
    token introspection (RFC 7662), authenticating with client credentials."""

    introspection_url: str = Field(description="Its introspection endpoint.")
    client_id: str
    client_secret: SecretStr = Field(description="Prefer the RELAYGATE_… environment variable.")
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    timeout_ms: int = Field(2_000, ge=1, description="Per introspection call; then 503.")
    cache_s: float = Field(
        60.0, ge=0, le=3_600, description="An active token is reused this long (at most to exp)."
    )
    negative_cache_s: float = Field(
        5.0, ge=0, le=3_600, description="An inactive token is refused this long without asking."
    )
    max_cached_tokens: int = Field(10_000, ge=1)
    audience: list[str] = Field(
        default_factory=list, description="When set, `aud` must name one of these."
    )
    issuer: str | None = Field(None, description="When set, `iss` must equal it.")
    claims: ClaimMapping = ClaimMapping(subject=["sub", "username", "client_id"])
    tenant: str | None = Field(None, description="Tenant of its principals without a tenant claim.")

    @field_validator("introspection_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _http_url(url)


class _BearerPolicy(_Model):
    scopes: list[str] = Field(
        default_factory=list, description="Scopes the token must all carry (else 403)."
    )
    roles: list[str] = Field(
        default_factory=list, description="The token must carry one of these roles (else 403)."
    )
    realm: str = Field("relaygate", pattern=r'^[^"\\]*$', description="In WWW-Authenticate.")
    optional: bool = Field(
        False,
        description="No bearer token: pass unauthenticated (a later policy may authenticate).",
    )
    max_token_bytes: int = Field(8_192, ge=64, description="Longer tokens are refused.")


class JwtPolicy(_BearerPolicy):
    """Bearer JWTs verified at the edge against the keys of configured `issuers`."""

    type: Literal["jwt"]
    issuers: list[str] | None = Field(None, description="Names in `issuers`; unset: all of them.")


class IntrospectionPolicy(_BearerPolicy):
    """Opaque bearer tokens checked with an authorization server (RFC 7662)."""

    type: Literal["introspection"]
    server: str = Field(description="A name in `authorization_servers`.")


Policy = Annotated[
    RateLimitPolicy | JwtPolicy | IntrospectionPolicy | ApiKeyPolicy | OAuthPolicy | IpRulesPolicy,
    Field(discriminator="type"),
]


class StateConfig(_Model):
    url: str | None = Field(
        None,
        description="redis://host:port/db shares state across ingress nodes; unset: in memory "
        "(credentials: a SQLite file in `dir`).",
    )
    timeout_ms: int = Field(250, ge=1, description="Per Redis call; then the fallback applies.")
    dir: Path | None = Field(
        None,
        description="Where a node without `url` keeps credentials (API keys, OAuth clients, "
        "signing keys): credentials.db in it. Unset: $XDG_DATA_HOME/relaygate, else "
        "~/.local/share/relaygate.",
    )
    credentials_ttl_ms: int = Field(
        500,
        ge=0,
        le=1000,
        description="How long a node trusts what it read about a key, client or token: "
        "a revocation reaches every node within this.",
    )

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


class ApiKeysConfig(_Model):
    """API keys: issued, rotated and revoked through the admin API."""

    rotation_grace_s: float = Field(
        86_400,
        ge=0,
        description="After a rotation the previous secret keeps working this long.",
    )


class AuthServerConfig(_Model):
    """The gateway's own OAuth 2.0 authorization server (client credentials grant) for
    third-party applications: /oauth/token, /oauth/revoke, /oauth/introspect,
    /.well-known/jwks.json and /.well-known/oauth-authorization-server on the data plane."""

    issuer: str | None = Field(
        None,
        description="`iss` of its tokens and base of its endpoint URLs: the public URL of "
        "the gateway. Unset: http://<ingress.host>:<ingress.port>.",
    )
    audience: str | None = Field(None, description="`aud` of its tokens. Unset: the issuer.")
    token_ttl_s: int = Field(3600, ge=1, le=86_400, description="Access token lifetime.")
    algorithm: Literal["RS256", "ES256"] = Field(
        "RS256", description="Signature of access tokens (RS256 verifies fastest)."
    )
    scopes: list[str] = Field(
        default_factory=list,
        description="Scopes clients may be given; unset: any. Published as scopes_supported.",
    )

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, issuer: str | None) -> str | None:
        return None if issuer is None else _http_base_url(issuer)


_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _origin_list(origins: list[str]) -> list[str]:
    out = []
    for origin in origins:
        lowered = origin.lower().rstrip("/")
        if lowered != "*" and not _ORIGIN.match(lowered):
            raise ValueError(f"{origin!r} is not an origin: use scheme://host[:port] or '*'")
        out.append(lowered)
    return out


class CorsOptions(_Model):
    """Cross-origin requests from browsers; preflights are answered at the ingress."""

    origins: list[str] = Field(
        min_length=1,
        description="Allowed origins, exact (https://app.example.com) or '*' for any.",
    )
    methods: list[str] | None = Field(
        None, description="Methods a preflight may ask for; unset: the route's methods."
    )
    headers: list[str] = Field(
        default_factory=list,
        description="Request headers a preflight may ask for; '*': any.",
    )
    expose_headers: list[str] = Field(
        default_factory=list, description="Response headers scripts may read."
    )
    credentials: bool = Field(
        False, description="Allow cookies and Authorization (the origin is echoed, never '*')."
    )
    max_age_s: int = Field(600, ge=0, le=86_400, description="How long a preflight is cached.")

    @field_validator("origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        return _origin_list(origins)

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str] | None) -> list[str] | None:
        if methods is not None:
            for method in methods:
                if not re.fullmatch(r"[A-Za-z]+", method):
                    raise ValueError(f"{method!r} is not an HTTP method")
            return [m.upper() for m in methods]
        return None

    @field_validator("headers", "expose_headers")
    @classmethod
    def _header_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if name != "*" and not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a header name")
        return [name.lower() for name in names]


class WebSocketRate(_Model):
    """A token bucket per connection: `burst` messages at once, refilled at `messages_per_s`."""

    messages_per_s: float = Field(gt=0, description="Sustained messages per second.")
    burst: int = Field(ge=1, description="Messages a connection may send at once.")


class WebSocketOptions(_Model):
    """Clients open a WebSocket at `/ws/<route name>`; each message they send becomes a
    `ws.message` envelope on the route's topic (see docs/websocket.md)."""

    origins: list[str] | None = Field(
        None,
        description="Origins browsers may connect from, exact or '*'. Unset: the route's "
        "cors.origins, else only the gateway's own host. Clients that send no Origin "
        "(not browsers) are not checked.",
    )
    max_message_bytes: int = Field(
        64 * 1024, ge=1, le=16 * MiB, description="A larger message closes the socket (1009)."
    )
    rate: WebSocketRate | None = Field(
        WebSocketRate(messages_per_s=100, burst=100),
        description="Per connection; a client over it is closed (1008). null: no limit.",
    )

    @field_validator("origins")
    @classmethod
    def _origins(cls, origins: list[str] | None) -> list[str] | None:
        return None if origins is None else _origin_list(origins)


class HeaderRule(_Model):
    """A response header the gateway sets; a plain string is `{value: ..., mode:
    keep_upstream}`."""

    value: str = Field(min_length=1, pattern=r"^[\t\x20-\x7e]+$")
    mode: Literal["keep_upstream", "override"] = Field(
        "keep_upstream",
        description="On proxied and cached responses: keep_upstream sets the header only "
        "when the upstream sent none; override replaces the upstream's.",
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_string(cls, value: object) -> object:
        return {"value": value} if isinstance(value, str) else value


class HstsOptions(_Model):
    """Strict-Transport-Security, sent only on requests that came over TLS."""

    max_age_s: int = Field(31_536_000, ge=0)
    include_subdomains: bool = True
    preload: bool = False
    mode: Literal["keep_upstream", "override"] = "keep_upstream"


GATEWAY_CSP = "default-src 'none'; frame-ancestors 'none'"


class SecurityHeadersOptions(_Model):
    """Security headers on every data-plane response. A route's block overrides the
    global one key by key; null removes a header."""

    content_security_policy: HeaderRule | None = Field(
        None,
        description="CSP of proxied and cached responses; unset: the upstream's own, if any.",
    )
    gateway_content_security_policy: str | None = Field(
        GATEWAY_CSP,
        pattern=r"^[\t\x20-\x7e]+$",
        description="CSP of responses the gateway writes itself (problems, preflights, "
        "its own endpoints).",
    )
    hsts: HstsOptions | None = Field(
        HstsOptions(), description="Strict-Transport-Security on TLS requests."
    )
    content_type_options: HeaderRule | None = Field(
        HeaderRule(value="nosniff"), description="X-Content-Type-Options."
    )
    referrer_policy: HeaderRule | None = Field(
        HeaderRule(value="no-referrer"), description="Referrer-Policy."
    )
    frame_options: HeaderRule | None = Field(
        HeaderRule(value="DENY"), description="X-Frame-Options (CSP frame-ancestors' elder)."
    )
    headers: dict[str, HeaderRule] = Field(
        default_factory=dict,
        description="More headers by name (Permissions-Policy, Cross-Origin-Opener-Policy, …).",
    )

    @field_validator("headers")
    @classmethod
    def _names(cls, headers: dict[str, HeaderRule]) -> dict[str, HeaderRule]:
        for name in headers:
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a header name")
        return {name.lower(): rule for name, rule in headers.items()}

    def over(self, base: SecurityHeadersOptions | None) -> SecurityHeadersOptions:
        """This block with the keys it does not set taken from `base`."""
        if base is None:
            return self
        mine = {key: getattr(self, key) for key in self.model_fields_set}
        return base.model_copy(update=mine)


class PerClientRate(_Model):
    """A token bucket per client address, in memory on each node."""

    rate: float = Field(
        gt=0, description="Requests per second one address (IPv6: one /64) may sustain."
    )
    burst: int = Field(ge=1, description="Requests one address may send at once.")
    max_clients: int = Field(
        100_000, ge=1, description="Addresses tracked at once (about 200 bytes each)."
    )


class AdmissionConfig(_Model):
    """Load shedding at the ingress: past the concurrency limit and a short queue,
    503 with Retry-After at once, so that admitted requests keep a bounded latency."""

    max_concurrency: int | None = Field(
        None, ge=1, description="Requests in flight at once on this node; unset: no limit."
    )
    max_queue: int = Field(
        64, ge=0, description="Requests waiting for a slot; past it, 503 at once."
    )
    queue_timeout_ms: int = Field(
        100, ge=1, le=60_000, description="How long a request may wait for a slot."
    )
    reserved: int = Field(
        0, ge=0, description="Slots only callers of a tier with priority > 0 may take."
    )
    per_client: PerClientRate | None = Field(
        None, description="Request rate per client address; 429 past it. Unset: none."
    )

    @model_validator(mode="after")
    def _reserve_fits(self) -> AdmissionConfig:
        if self.reserved and (
            self.max_concurrency is None or self.reserved >= self.max_concurrency
        ):
            raise ValueError("reserved must be below max_concurrency")
        return self


class RouteDocs(_Model):
    """How a route appears in the API documentation the admin API serves (`/api-docs/`)."""

    roles: list[str] | None = Field(
        None,
        description="Readers holding one of these roles see the route; unset: every "
        "authenticated reader; []: only the admin token.",
    )
    summary: str | None = Field(None, max_length=200, description="One line: what it does.")
    description: str | None = Field(None, description="Longer text (CommonMark).")
    tags: list[str] = Field(default_factory=list, description="OpenAPI tags, for grouping.")
    openapi_url: str | None = Field(
        None,
        description="The upstream's own OpenAPI document (JSON), merged under the route's "
        "path: an http(s) URL, or a path (/openapi.json) on the route's upstream.",
    )

    @field_validator("openapi_url")
    @classmethod
    def _url_or_path(cls, url: str | None) -> str | None:
        if url is None or url.startswith("/"):
            return url
        return _http_url(url)


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
    cors: CorsOptions | None = Field(None, description="Unset: no CORS headers, no preflights.")
    security_headers: SecurityHeadersOptions | None = Field(
        None, description="Overrides the global security_headers key by key."
    )
    docs: RouteDocs = Field(
        default_factory=RouteDocs, description="The route in the API docs (/api-docs/)."
    )
    websocket: WebSocketOptions | None = Field(
        None, description="Set to accept WebSockets at /ws/<name>; unset: HTTP only."
    )
    mode: Literal["sync", "async"] = Field(
        "sync",
        description="async: the request is stored on the bus and answered 202 Accepted with "
        "a Location to fetch the result from (docs/async-and-events.md).",
    )

    @model_validator(mode="after")
    def _websocket_target(self) -> Route:
        if self.websocket is not None and not isinstance(self.to, WorkerTarget):
            raise ValueError("websocket: needs `to: {type: worker, ...}`: messages go to a topic")
        return self


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return url


def _http_base_url(url: str) -> str:
    return _http_url(url).rstrip("/")


class UpstreamInstance(_Model):
    """One server of an upstream."""

    url: str = Field(description="Base URL, e.g. http://10.0.0.5:8000 or http://orders:8000/api")
    group: int = Field(
        0,
        ge=0,
        description="Failover order: 0 is the primary group, 1 the first backup, and so on. "
        "Requests go to the lowest group that has an available instance.",
    )
    weight: int = Field(
        1, ge=1, le=65_535, description="Share of the group's requests, relative to the others."
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


class StaticDiscovery(_Model):
    """The instances are `url` or `targets`, fixed until the config is reloaded."""

    type: Literal["static"]


class DnsDiscovery(_Model):
    """Instances from DNS, resolved again when the records' TTL runs out (kept between
    `min_ttl_s` and `max_ttl_s`). A/AAAA: one instance per address, on `port`. SRV
    (`_http._tcp.orders.internal`): host and port from each record, the priority becomes
    the failover group (lowest first) and the weight the instance's balancing weight."""

    type: Literal["dns"]
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The name to resolve, e.g. orders.internal or _http._tcp.orders.internal.",
    )
    record: Literal["A", "AAAA", "A+AAAA", "SRV"] = Field(
        "A", description="A, AAAA, both (A+AAAA), or SRV records."
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="A/AAAA: the instances' port (required); SRV: unused."
    )
    scheme: Literal["http", "https"] = "http"
    base_path: str = Field(
        "", pattern=r"^(/[^?#]*)?$", description="Path prefix of every instance, e.g. /api."
    )
    nameservers: list[str] | None = Field(
        None,
        min_length=1,
        description="Nameserver IP addresses; unset: the system's (/etc/resolv.conf).",
    )
    nameserver_port: int = Field(53, ge=1, le=65535)
    timeout_ms: int = Field(2_000, ge=1, description="One resolution's deadline.")
    min_ttl_s: float = Field(1.0, gt=0, description="Resolve at most this often.")
    max_ttl_s: float = Field(300.0, gt=0, description="Resolve at least this often.")

    @model_validator(mode="after")
    def _port_and_ttls(self) -> DnsDiscovery:
        if self.record != "SRV" and self.port is None:
            raise ValueError(f"`port` is required with {self.record} records")
        if self.min_ttl_s > self.max_ttl_s:
            raise ValueError("min_ttl_s must not exceed max_ttl_s")
        return self


class EtcdDiscovery(_Model):
    """Instances stored in etcd under `<prefix><service>/<instance-id>` as JSON
    `{"url": ..., "group": 0, "weight": 1}`, watched: changes apply at once, and keys
    attached to a lease vanish when their owner stops renewing it."""

    type: Literal["etcd"]
    endpoints: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:2379"],
        min_length=1,
        description="etcd client URLs (v3 JSON gateway), tried in turn.",
    )
    prefix: str = Field(
        "/relaygate/services/", pattern=r"^/.*/$", description="Key prefix of all services."
    )
    service: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$", description="Unset: the upstream's name."
    )

    @field_validator("endpoints")
    @classmethod
    def _http_urls(cls, endpoints: list[str]) -> list[str]:
        return [_http_base_url(url) for url in endpoints]


class BusDiscovery(_Model):
    """Instances that announce themselves on the gateway's bus with a heartbeat
    (`relaygate announce`, or `workers.routing.discovery.announce`); one that misses its
    TTL, or says goodbye on a clean stop, leaves the upstream."""

    type: Literal["bus"]
    service: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$", description="Unset: the upstream's name."
    )
    ttl_s: float = Field(
        10.0,
        ge=1,
        le=3600,
        description="NATS: TTL of the key-value bucket, if this creates it. Each announcement "
        "carries its own TTL, which the reader enforces on both buses.",
    )


Discovery = Annotated[
    StaticDiscovery | DnsDiscovery | EtcdDiscovery | BusDiscovery, Field(discriminator="type")
]


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
    discovery: Discovery | None = Field(
        None,
        description="Where the instances come from when they change at run time "
        "(dns, etcd, bus); unset or static: `url` / `targets`.",
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
        if self.discovery is not None and self.discovery.type != "static":
            if self.url is not None or self.targets is not None:
                raise ValueError(
                    f"discovery {self.discovery.type!r} finds the instances: "
                    "give no `url` or `targets`"
                )
            return self
        if (self.url is None) == (self.targets is None):
            raise ValueError("give either `url` (one instance) or `targets`, not both or neither")
        urls = [target.url for target in self.targets or ()]
        if len(urls) != len(set(urls)):
            raise ValueError("each target URL must appear once")
        return self

    @property
    def discovered(self) -> bool:
        """Whether the instances come from a discovery source rather than the config."""
        return self.discovery is not None and self.discovery.type != "static"

    def instances(self) -> list[UpstreamInstance]:
        """`targets`, or the one instance that `url` stands for; none when discovered."""
        if self.targets is not None:
            return list(self.targets)
        if self.url is None:
            return []
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


class AsyncWorker(_Model):
    """The async runner: runs stored async requests through their routes' workers."""

    type: Literal["async"]
    replicas: int = Field(1, ge=1, le=64)


WorkerSpec = Annotated[
    EchoWorker | RoutingWorker | ModuleWorker | AsyncWorker, Field(discriminator="type")
]


DocsAuthPolicy = Annotated[
    JwtPolicy | IntrospectionPolicy | ApiKeyPolicy | OAuthPolicy, Field(discriminator="type")
]


class DocsEvent(_Model):
    """An event type published on `<prefix>.evt.<name>`, listed in the AsyncAPI document."""

    name: str = Field(pattern=NAME_PATTERN)
    roles: list[str] | None = Field(
        None, description="Readers holding one of these roles see it; unset: every reader."
    )
    summary: str | None = Field(None, max_length=200)
    description: str | None = None


class DashboardConfig(_Model):
    """The live dashboard on the admin port (`/dashboard`): rates, error rates and
    latency per route, bus and worker health, pushed to the browser every sample."""

    enabled: bool = Field(True, description="Serve /dashboard on the admin port.")
    interval_s: float = Field(
        1.0, ge=0.25, le=60, description="Seconds between samples (and pushes to browsers)."
    )
    history_s: int = Field(
        300,
        ge=10,
        le=3600,
        description="Seconds of samples kept in memory, sent to a browser when it connects.",
    )
    session_ttl_s: int = Field(
        43200,
        ge=60,
        le=604800,
        description="Lifetime of the session cookie a login with admin.token gives.",
    )


class DocsConfig(_Model):
    """The API documentation on the admin port: OpenAPI for the routes, AsyncAPI for the
    topics, each reader seeing only what its roles allow."""

    enabled: bool = Field(True, description="Serve /api-docs/ on the admin port.")
    auth: list[DocsAuthPolicy] | None = Field(
        None,
        description="How readers authenticate: tried in order, the first that accepts "
        "the caller admits it. Unset: the config's own jwt, introspection, api_key and "
        "oauth policies, without their scope and role requirements. The admin token "
        "always reads everything.",
    )
    title: str = Field("relaygate API", description="`info.title` of both documents.")
    version: str = Field("1.0.0", description="`info.version` of both documents.")
    description: str | None = Field(None, description="`info.description` (CommonMark).")
    server_url: str | None = Field(
        None,
        description="The gateway's public URL in the OpenAPI `servers`; unset: "
        "auth_server.issuer, else http://<ingress.host>:<ingress.port>.",
    )
    fetch_timeout_ms: int = Field(
        2_000, ge=1, description="Per fetch of an upstream's OpenAPI document."
    )
    cache_s: float = Field(300, ge=0, description="How long a fetched upstream document is kept.")
    retry_s: float = Field(30, ge=0, description="After a failed fetch, wait this long to retry.")
    max_document_bytes: int = Field(
        4 * MiB, ge=1024, description="Larger upstream documents are refused."
    )
    events: list[DocsEvent] = Field(
        default_factory=list, description="Event types to list (topics `<prefix>.evt.<name>`)."
    )

    @field_validator("server_url")
    @classmethod
    def _server_url(cls, url: str | None) -> str | None:
        return None if url is None else _http_base_url(url)


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


class AsyncRequestsConfig(_Model):
    """Asynchronous requests: stored durably on the bus, answered 202 with a Location,
    run by the async runner (`relaygate worker async`), results kept for a while."""

    honor_prefer: bool = Field(
        False,
        description="`Prefer: respond-async` turns a request on any route asynchronous; "
        "false: the preference is ignored (RFC 7240 allows it).",
    )
    results_path: str = Field(
        "/results",
        pattern=r"^/[A-Za-z0-9._~-]+$",
        description="Results are served at <results_path>/<id> on the data plane.",
    )
    result_ttl_s: float = Field(
        3600.0, gt=0, le=30 * 86_400, description="How long a result (and an id) is kept."
    )
    max_wait_s: float = Field(
        60.0, ge=0, le=600, description="Cap of `Prefer: wait=N` on a result."
    )
    retry_after_s: int = Field(
        1, ge=1, description="Retry-After of a 202 while the result is pending."
    )
    max_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Runs of a request whose worker did not answer (none listening, "
        "timeout) before its result becomes that 503/504.",
    )
    concurrency: int = Field(64, ge=1, le=4096, description="Requests each runner runs at once.")
    max_body_bytes: int = Field(
        10 * MiB, ge=0, description="A result body above this is stored as a 502 problem."
    )
    policies: list[Policy] = Field(
        default_factory=list,
        description="Run on GET <results_path>/<id> after the global ones. A result of an "
        "authenticated request is served only to the same principal: authenticate here.",
    )


class IdempotencyConfig(_Model):
    """`Idempotency-Key` on requests: the same key and request give the same answer
    without running it twice; the same key with another request is refused (422)."""

    enabled: bool = Field(False, description="Honour Idempotency-Key on every route.")
    ttl_s: float = Field(
        86_400.0, gt=0, le=30 * 86_400, description="How long a key and its answer are kept."
    )
    max_response_bytes: int = Field(
        MiB, ge=0, description="A larger answer is sent but its key is released, not stored."
    )


class EventType(_Model):
    """An event type accepted at `POST <events.path>/<type>`, with its payload schema."""

    schema_file: Path | None = Field(
        None,
        description="JSON Schema (.json) or Avro (.avsc) of the event's data; a relative "
        "path is looked up in the working directory, then in contracts/schemas/events/.",
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="The JSON Schema inline, instead of schema_file."
    )
    description: str | None = None

    @model_validator(mode="after")
    def _one_schema(self) -> EventType:
        if (self.schema_file is None) == (self.json_schema is None):
            raise ValueError("give exactly one of schema_file and json_schema")
        return self


class EventsConfig(_Model):
    """Event intake: CloudEvents over HTTP, validated, stored on `<prefix>.events`."""

    path: str = Field(
        "/events",
        pattern=r"^/[A-Za-z0-9._~-]+$",
        description="Events are posted to <path>/<type>.",
    )
    types: dict[str, EventType] = Field(
        default_factory=dict, description="Accepted event types by name; empty: no intake."
    )
    policies: list[Policy] = Field(
        default_factory=list, description="Run on every posted event (after the global ones)."
    )
    max_body_bytes: int = Field(MiB, ge=0, description="Largest event accepted.")

    @field_validator("types")
    @classmethod
    def _names(cls, types: dict[str, EventType]) -> dict[str, EventType]:
        for name in types:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"{name!r}: use letters, digits, '-', '_', and '.' between them")
        return types


class Config(BaseSettings):
    """The whole gateway configuration."""

    model_config = SettingsConfigDict(
        env_prefix="RELAYGATE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    bus: BusConfig = BusConfig()
    ingress: IngressConfig = IngressConfig()
    admin: AdminConfig = AdminConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    bridge: BridgeConfig = BridgeConfig()
    state: StateConfig = StateConfig()
    policies: list[Policy] = Field(
        default_factory=list, description="Run on every route, before the route's own."
    )
    tiers: dict[str, Tier] = Field(default_factory=dict)
    caller: CallerConfig = CallerConfig()
    api_keys: ApiKeysConfig = ApiKeysConfig()
    auth_server: AuthServerConfig | None = Field(
        None, description="Set (even to {}) to serve the gateway's OAuth 2.0 endpoints."
    )
    security_headers: SecurityHeadersOptions | None = Field(
        None, description="Security headers on every data-plane response; unset: none."
    )
    admission: AdmissionConfig = AdmissionConfig()
    routes: list[Route] = Field(default_factory=list)
    upstreams: dict[str, HttpUpstream] = Field(default_factory=dict)
    issuers: dict[str, JwtIssuer] = Field(
        default_factory=dict, description="Identity providers whose JWTs `jwt` policies accept."
    )
    authorization_servers: dict[str, AuthorizationServer] = Field(
        default_factory=dict,
        description="OAuth 2.0 servers that `introspection` policies ask about opaque tokens.",
    )
    docs: DocsConfig = Field(
        default_factory=DocsConfig, description="API documentation on the admin port."
    )
    dashboard: DashboardConfig = Field(
        default_factory=DashboardConfig, description="The live dashboard on the admin port."
    )
    async_requests: AsyncRequestsConfig = Field(
        default_factory=AsyncRequestsConfig, description="Asynchronous (202) requests."
    )
    idempotency: IdempotencyConfig = Field(
        default_factory=IdempotencyConfig, description="Idempotency-Key on requests."
    )
    events: EventsConfig = Field(
        default_factory=EventsConfig, description="Event intake (CloudEvents over HTTP)."
    )
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
        data = self.model_dump(
            include={
                "routes",
                "upstreams",
                "policies",
                "tiers",
                "caller",
                "docs",
                "events",
                "async_requests",
            }
        )
        problems = reference_problems(data["routes"], data["upstreams"])
        problems += tier_problems(data)
        problems += auth_problems(data, self.issuers, set(self.authorization_servers))
        if self.auth_server is not None and self.auth_server.issuer is None and self.state.url:
            problems.append(
                "auth_server.issuer: set it when state.url shares credentials: each node "
                "would name itself and refuse the others' tokens"
            )
        if self.auth_server is None:
            problems += [
                f"{where}.type: an oauth policy needs the auth_server section"
                for where, policy in _policy_places(data)
                if policy.get("type") == "oauth"
            ]
        problems += self._state_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def uses_async(self) -> bool:
        """Whether any request can become asynchronous (async routes, or Prefer honoured)."""
        return self.async_requests.honor_prefer or any(r.mode == "async" for r in self.routes)

    def _state_problems(self) -> list[str]:
        """Async results and idempotency keys live in Redis, else in the bus's key-value
        store: Kafka has none, so there they need state.url."""
        bus = self.bus.url or ""
        if not bus.startswith("kafka://") or self.state.url is not None:
            return []
        problems = [
            f"routes[{i}].mode: async requests on a Kafka bus need state.url (Redis) to "
            "keep their results"
            for i, route in enumerate(self.routes)
            if route.mode == "async"
        ]
        if self.async_requests.honor_prefer:
            problems.append(
                "async_requests.honor_prefer: async requests on a Kafka bus need state.url "
                "(Redis) to keep their results"
            )
        if self.idempotency.enabled:
            problems.append(
                "idempotency.enabled: idempotency keys on a Kafka bus need state.url (Redis) "
                "to be shared by every ingress node"
            )
        return problems

    def effective_workers(self) -> list[EchoWorker | RoutingWorker | ModuleWorker | AsyncWorker]:
        """`workers`, plus a routing worker when upstream routes need one and an async
        runner when requests can be asynchronous, when none is listed."""
        workers = list(self.workers)
        needs_routing = any(isinstance(r.to, UpstreamTarget) for r in self.routes)
        if needs_routing and not any(isinstance(w, RoutingWorker) for w in workers):
            workers.append(RoutingWorker(type="routing"))
        if self.uses_async() and not any(isinstance(w, AsyncWorker) for w in workers):
            workers.append(AsyncWorker(type="async"))
        return workers

    def redacted(self) -> dict[str, Any]:
        """The config as JSON-able data, with credentials in URLs masked."""
        data = self.model_dump(mode="json")
        if data["admin"]["token"]:
            data["admin"]["token"] = "***"  # noqa: S105 (a mask)
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
    places = _policy_places(data)
    tiers_have_limits = any(t.get("limits") for t in tiers.values())
    for where, policy in places:
        if (
            policy.get("type") == "rate_limit"
            and not policy.get("limits")
            and not tiers_have_limits
        ):
            problems.append(f"{where}.limits: give limits, or define tiers with limits")
    return problems


def _policy_places(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every policy of the config with its YAML path."""
    places = [(f"policies[{i}]", p) for i, p in enumerate(data.get("policies") or [])]
    for r, route in enumerate(data.get("routes") or []):
        places += [
            (f"routes[{r}].policies[{i}]", p) for i, p in enumerate(route.get("policies") or [])
        ]
    docs = data.get("docs")
    if isinstance(docs, dict):
        places += [(f"docs.auth[{i}]", p) for i, p in enumerate(docs.get("auth") or [])]
    for section in ("events", "async_requests"):
        options = data.get(section)
        if isinstance(options, dict):
            places += [
                (f"{section}.policies[{i}]", p) for i, p in enumerate(options.get("policies") or [])
            ]
    return places


def auth_problems(
    data: dict[str, Any], issuers: dict[str, JwtIssuer], servers: set[str]
) -> list[str]:
    """`jwt` and `introspection` policies must name issuers and servers that exist; one
    `iss` value names one issuer (it selects the keys)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for name, issuer in issuers.items():
        if issuer.issuer in seen:
            problems.append(
                f"issuers.{name}.issuer: {issuer.issuer!r} is also issuer {seen[issuer.issuer]!r}"
            )
        seen[issuer.issuer] = name
    places = _policy_places(data)
    for where, policy in places:
        if policy.get("type") == "jwt":
            if not issuers:
                problems.append(f"{where}: a jwt policy needs `issuers` defined at the top level")
            for j, name in enumerate(policy.get("issuers") or []):
                if name not in issuers:
                    known = ", ".join(sorted(issuers)) or "none defined"
                    problems.append(f"{where}.issuers[{j}]: unknown issuer {name!r} ({known})")
        elif policy.get("type") == "introspection" and policy.get("server") not in servers:
            known = ", ".join(sorted(servers)) or "none defined"
            problems.append(
                f"{where}.server: unknown authorization server {policy.get('server')!r} ({known})"
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
