"""Traces, off unless configured: then `tracer()` is None and callers skip every span
(one `is None` test per hop, no span object).

    configure_tracing(config.telemetry.tracing, "ingress")   # once per process
    t = tracer()
    if t is not None:
        span = t.start("GET", SERVER, {"url.path": "/x"}, parent=parse_traceparent(...))
        token = use(span)          # the current span of this task (bus and proxy spans nest)
        ...
        restore(token); span.end()

Why not the OpenTelemetry SDK on the hot path: its spans cost ~100 µs each here (span
objects with locks, attribute cleaning, context attach, the batch processor's lock and
condition, protobuf encoding that holds the GIL in the export thread): 100 % sampling
cut the gateway's throughput to a third. A span here is one slotted object: W3C ids from
`random.getrandbits`, the caller's attribute dict kept as is. At `end()` it becomes its
OTLP JSON text (the OTLP spec's JSON encoding), queued in a bounded deque (full: the span
is dropped and counted, never a wait). The event loop joins the texts into batches; a
thread only sends them over OTLP/HTTP (see `Exporter`).

The OpenTelemetry API keeps working for team handlers: the SDK's provider is the global
one, its spans are handed to the same export queue, and `otel_attach(span)` makes our
span their parent (see workers/sdk/serve.py).

Configured by the standard variables: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _HEADERS,
_TIMEOUT (ms), _COMPRESSION (gzip), _CERTIFICATE, _CLIENT_KEY, _CLIENT_CERTIFICATE;
OTEL_TRACES_SAMPLER[_ARG]; OTEL_BSP_SCHEDULE_DELAY, _MAX_QUEUE_SIZE,
_MAX_EXPORT_BATCH_SIZE; OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES; OTEL_SDK_DISABLED.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.client
import logging
import os
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quote
from random import getrandbits
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from contracts.config import TracingConfig
from contracts.telemetry.families import Counter
from contracts.telemetry.memory import keep_freed_memory

log = logging.getLogger("relaygate.telemetry")

# opentelemetry.proto.trace.v1.Span.SpanKind
INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = 1, 2, 3, 4, 5
_STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.StatusCode
SCOPE = "relaygate"

SPANS_EXPORTED = Counter(
    "relaygate_trace_spans_exported", "Spans the OTLP collector accepted."
)  # fmt: skip
SPANS_DROPPED = Counter(
    "relaygate_trace_spans_dropped",
    "Spans not exported: queue_full (the export queue was full: the collector is slow "
    "or down), export_failed (the collector refused the batch or stayed unreachable).",
    ["reason"],
)
_QUEUE_FULL = SPANS_DROPPED.labels("queue_full")
_EXPORT_FAILED = SPANS_DROPPED.labels("export_failed")
_EXPORTED = SPANS_EXPORTED.labels()

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_tuple_new = tuple.__new__

_tracer: Tracer | None = None
_provider: Any = None  # the SDK's TracerProvider, for team handlers' spans
_current: ContextVar[Span | None] = ContextVar("relaygate_span", default=None)


class Parent(NamedTuple):
    """A remote parent, from a W3C `traceparent` (and `tracestate`). (A named tuple:
    a frozen dataclass's __init__ cost a microsecond per message.)"""

    trace_id: str
    span_id: str
    sampled: bool
    tracestate: str | None


def parse_traceparent(traceparent: str | None, tracestate: str | None = None) -> Parent | None:
    """The parent a `traceparent` names; None when it is missing or invalid (W3C rules:
    version ff, zero ids, or version 00 with trailing fields are invalid)."""
    if not traceparent:
        return None
    if len(traceparent) == 55:  # version 00, flags 00 or 01: what nearly every sender writes
        m = _TRACEPARENT_00.fullmatch(traceparent)
        if m is not None:
            trace_id, span_id, sampled = m.groups()
            if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
                return None
            # tuple.__new__: the named tuple's own __new__ is a Python frame (~0.15 µs).
            return _tuple_new(Parent, (trace_id, span_id, sampled == "1", tracestate or None))
    m = _TRACEPARENT.fullmatch(traceparent)  # as written by W3C-conforming senders
    if m is None:
        m = _TRACEPARENT.fullmatch(traceparent.strip().lower())
        if m is None:
            return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    if span_id == _ZERO_SPAN:
        return None
    return Parent(trace_id, span_id, int(flags, 16) & 1 == 1, tracestate or None)


# Span ids made 256 at a time from one random number: formatting one id per span cost
# half a microsecond. `list.pop` is atomic, so threads never share an id.
_span_ids: list[str] = []
_IDS_PER_REFILL = 256
os.register_at_fork(after_in_child=_span_ids.clear)  # a child draws ids of its own


def _new_span_id() -> str:
    try:
        return _span_ids.pop()
    except IndexError:
        raw = getrandbits(64 * _IDS_PER_REFILL).to_bytes(8 * _IDS_PER_REFILL, "big")
        ids = raw.hex(" ", 8).split()
        while _ZERO_SPAN in ids:  # all-zero is invalid (one chance in 2**64)
            ids.remove(_ZERO_SPAN)
        _span_ids.extend(ids)
        return _new_span_id()


def _new_trace_id() -> str:
    bits = getrandbits(128)
    while not bits:
        bits = getrandbits(128)
    return f"{bits:032x}"


class Span:
    """One span. Unsampled ones (`sampled` false) carry ids to pass on, nothing else is
    recorded. Not thread-safe: a span belongs to the task that started it."""

    __slots__ = (
        "attributes",
        "end_ns",
        "error",
        "events",
        "kind",
        "name",
        "parent_id",
        "sampled",
        "scope",
        "span_id",
        "start_ns",
        "status_message",
        "trace_id",
        "tracer",
        "tracestate",
    )

    def __init__(
        self,
        tracer: Tracer | None,
        name: str,
        kind: int,
        attributes: dict[str, Any],
        trace_id: str,
        span_id: str,
        parent_id: str,
        sampled: bool,
        tracestate: str | None,
    ) -> None:
        self.tracer = tracer
        self.name = name
        self.kind = kind
        self.attributes = attributes
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.tracestate = tracestate
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.error = False
        self.status_message = ""
        self.scope = SCOPE
        self.events: list[tuple[int, str, dict[str, Any]]] | None = None

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_error(self, message: str = "") -> None:
        """Mark the span failed (OTLP status ERROR, with `message` when given)."""
        self.error = True
        self.status_message = message

    def traceparent(self) -> str:
        """The W3C `traceparent` that makes this span the parent of the next hop."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def end(self) -> None:
        """Record the span (once: a second call does nothing)."""
        tracer = self.tracer
        if tracer is not None:
            self.tracer = None
            if self.sampled:
                self.end_ns = time.time_ns()
                tracer.record(self)


class Sampler:
    """Parent-based (follow the caller's sampled flag) or not, with a ratio for new
    traces decided on the trace id's low 64 bits, as the OpenTelemetry SDK does: every
    process takes the same decision for one trace."""

    __slots__ = ("bound", "parent_based", "ratio")

    def __init__(self, ratio: float, parent_based: bool = True) -> None:
        self.ratio = ratio
        self.parent_based = parent_based
        self.bound = round(ratio * (1 << 64))

    def root(self, trace_id: str) -> bool:
        if self.ratio >= 1.0:
            return True
        if self.ratio <= 0.0:
            return False
        return int(trace_id[16:], 16) < self.bound

    def describe(self) -> str:
        kind = "parentbased_traceidratio" if self.parent_based else "traceidratio"
        return f"{kind} {self.ratio:g}"


def sampler_from(options: TracingConfig, env: Mapping[str, str]) -> Sampler:
    """`sample_ratio` (parent-based) when set, else OTEL_TRACES_SAMPLER[_ARG]."""
    if options.sample_ratio is not None:
        return Sampler(options.sample_ratio)
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    try:
        ratio = min(1.0, max(0.0, float(arg))) if arg else 1.0
    except ValueError:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number: using 1.0", arg)
        ratio = 1.0
    known = {
        "always_on": Sampler(1.0, parent_based=False),
        "always_off": Sampler(0.0, parent_based=False),
        "traceidratio": Sampler(ratio, parent_based=False),
        "parentbased_always_on": Sampler(1.0),
        "parentbased_always_off": Sampler(0.0),
        "parentbased_traceidratio": Sampler(ratio),
    }
    sampler = known.get(name)
    if sampler is None:
        log.warning("OTEL_TRACES_SAMPLER=%r is not supported: parentbased_always_on", name)
        return known["parentbased_always_on"]
    return sampler


class Tracer:
    """Starts spans and queues ended ones for the exporter."""

    __slots__ = ("_batch", "_exporter", "_queue", "_size", "producer_spans", "sampler")

    def __init__(
        self, sampler: Sampler, exporter: Exporter, *, producer_spans: bool = False
    ) -> None:
        self.sampler = sampler
        self.producer_spans = producer_spans
        self._exporter = exporter
        self._queue = exporter.spans
        self._size = exporter.settings.max_queue
        self._batch = exporter.settings.batch

    def start(
        self,
        name: str,
        kind: int,
        attributes: dict[str, Any],
        parent: Parent | Span | None = None,
    ) -> Span:
        """A span, child of `parent`, else of the task's current span (see `use`), else
        the root of a new trace (`attributes` is kept, not copied)."""
        if parent is None:
            parent = _current.get()
        if parent is None:
            trace_id = _new_trace_id()
            return Span(
                self, name, kind, attributes, trace_id, _new_span_id(), "",
                self.sampler.root(trace_id), None,
            )  # fmt: skip
        sampled = (
            parent.sampled if self.sampler.parent_based else self.sampler.root(parent.trace_id)
        )
        return Span(
            self, name, kind, attributes, parent.trace_id, _new_span_id(), parent.span_id,
            sampled, parent.tracestate,
        )  # fmt: skip

    def start_root(self, name: str, kind: int, attributes: dict[str, Any], trace_id: str) -> Span:
        """A span beginning the trace `trace_id` (a valid, random, 32-hex-digit id)."""
        return Span(
            self, name, kind, attributes, trace_id, _new_span_id(), "",
            self.sampler.root(trace_id), None,
        )  # fmt: skip

    def record(self, span: Span) -> None:
        """Queue an ended span for export, as its OTLP JSON text: made now, while the
        span is fresh in the CPU's caches, so that the span and its attributes are freed
        at once. (Keeping 512 span objects for a batch to encode later cost several
        times the encoding itself.) Dropped, and counted, when the queue is full."""
        queue = self._queue
        if len(queue) >= self._size:
            _QUEUE_FULL.value += 1
            return
        try:
            text = span_json(span)
        except Exception:  # an attribute that cannot be rendered: never fail a request
            _EXPORT_FAILED.value += 1
            log.exception("span %r could not be encoded: dropped", span.name)
            return
        queue.append(text if span.scope == SCOPE else (span.scope, text))
        exporter = self._exporter
        if not exporter.armed:
            exporter.arm()  # the first span since the last export
        elif len(queue) == self._batch:
            exporter.batch_full()


def current() -> Span | None:
    """The task's current span (set by `use`)."""
    return _current.get()


# The context variable's own methods: no Python frame per hop on the request path.
use: Callable[[Span | None], Token[Span | None]] = _current.set
"""Make `span` the task's current span: spans started without a parent nest under it."""
restore: Callable[[Token[Span | None]], None] = _current.reset


def tracer() -> Tracer | None:
    """The process's tracer when tracing is on, else None."""
    return _tracer


def tracing_wanted(options: TracingConfig, env: Mapping[str, str] = os.environ) -> bool:
    """On when configured so, or (unset) when an OTLP endpoint is given; never with
    OTEL_SDK_DISABLED=true."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if options.enabled is not None:
        return options.enabled
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


# --- OTLP/HTTP JSON export -------------------------------------------------------------


# The JSON is written as text: building a dict per span and per attribute for
# orjson cost ~10 µs a span, this ~3 µs. Strings are escaped by the json module's C
# encoder; an attribute's whole JSON is cached per key and value (most values repeat:
# methods, routes, topics, status codes), up to 256 values per key. No tuple per
# lookup: allocating GC-tracked objects in the encoder made the collector run more.
_FRAGMENTS: dict[str, dict[Any, str]] = {}
_MAX_FRAGMENTS = 256  # values cached per key


def _value_json(value: Any) -> str:
    # bool before int: True is an int too. int64 as a string, as the protobuf JSON
    # mapping writes it.
    if isinstance(value, str):
        return '{"stringValue":' + _quote(value) + "}"
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, int):
        return '{"intValue":"' + str(value) + '"}'
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return '{"doubleValue":"%s"}' % (
                "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
            )
        return '{"doubleValue":' + repr(value) + "}"
    if isinstance(value, list | tuple):
        return '{"arrayValue":{"values":[' + ",".join(map(_value_json, value)) + "]}}"
    return '{"stringValue":' + _quote(str(value)) + "}"


def _attribute_json(key: str, value: Any) -> str:
    kind = type(value)
    if kind is str or kind is int:  # not bool: True == 1 would share an entry
        by_value = _FRAGMENTS.get(key)
        if by_value is None:
            by_value = _FRAGMENTS[key] = {}
        cached = by_value.get(value)
        if cached is not None:
            return cached
        if len(by_value) < _MAX_FRAGMENTS:
            text = '{"key":' + _quote(key) + ',"value":' + _value_json(value) + "}"
            by_value[value] = text
            return text
        if kind is str:  # a key of ids: its share is full, keep the part before values
            prefix = '{"key":' + _quote(key) + ',"value":{"stringValue":'
            _STRING_PREFIXES[key] = prefix
            return prefix + _quote(value) + "}}"
    return '{"key":' + _quote(key) + ',"value":' + _value_json(value) + "}"


# The JSON before a string value, for keys whose cache is full (message and correlation
# ids, new on every span): ~0.2 µs an attribute instead of ~0.9.
_STRING_PREFIXES: dict[str, str] = {}


def _attributes_json(attributes: Mapping[str, Any]) -> str:
    # The cache lookups inline: a function call per attribute cost as much as the rest.
    fragments = _FRAGMENTS
    prefixes = _STRING_PREFIXES
    parts = []
    for key, value in attributes.items():
        kind = type(value)
        if kind is str or kind is int:
            by_value = fragments.get(key)
            if by_value is not None:
                cached = by_value.get(value)
                if cached is not None:
                    parts.append(cached)
                    continue
                if kind is str:
                    prefix = prefixes.get(key)
                    if prefix is not None:
                        parts.append(prefix + _quote(value) + "}}")
                        continue
        parts.append(_attribute_json(key, value))
    return ",".join(parts)


_NAMES: dict[str, str] = {}  # span names as JSON strings (they repeat: routes, topics)
_MAX_NAMES = 1024


def _name_json(name: str) -> str:
    text = _NAMES.get(name)
    if text is None:
        text = _quote(name)
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[name] = text
    return text


def span_json(span: Span) -> str:
    """The span as an OTLP JSON `Span` object."""
    extra = ""
    if span.parent_id:
        extra = ',"parentSpanId":"' + span.parent_id + '"'
    if span.tracestate:
        extra += ',"traceState":' + _quote(span.tracestate)
    if span.error:
        extra += ',"status":{"code":2,"message":' + _quote(span.status_message) + "}"
    if span.events:
        extra += (
            ',"events":['
            + ",".join(
                f'{{"timeUnixNano":"{at}","name":{_quote(name)},'
                f'"attributes":[{_attributes_json(attrs)}]}}'
                for at, name, attrs in span.events
            )
            + "]"
        )
    return (
        f'{{"traceId":"{span.trace_id}","spanId":"{span.span_id}"{extra},'
        f'"name":{_name_json(span.name)},"kind":{span.kind},'
        f'"startTimeUnixNano":"{span.start_ns}","endTimeUnixNano":"{span.end_ns}",'
        f'"attributes":[{_attributes_json(span.attributes)}]}}'
    )


# A queued span: its JSON text (scope relaygate), or (scope, text) for a team's span.
Queued = str | tuple[str, str]


def encode_batch(items: Iterable[Queued], resource: Mapping[str, Any]) -> bytes:
    """An `ExportTraceServiceRequest` in the OTLP JSON encoding (ids as hex strings,
    enums as integers, 64-bit integers as strings, lowerCamelCase field names)."""
    scopes: dict[str, list[str]] = {}
    for item in items:
        scope, text = (SCOPE, item) if isinstance(item, str) else item
        texts = scopes.get(scope)
        if texts is None:
            texts = scopes[scope] = []
        texts.append(text)
    scope_spans = ",".join(
        f'{{"scope":{{"name":{_quote(name)}}},"spans":[{",".join(texts)}]}}'
        for name, texts in scopes.items()
    )
    return (
        f'{{"resourceSpans":[{{"resource":{{"attributes":[{_attributes_json(resource)}]}},'
        f'"scopeSpans":[{scope_spans}]}}]}}'
    ).encode()


def encode(spans: Iterable[Span], resource: Mapping[str, Any]) -> bytes:
    """`encode_batch` of spans."""
    return encode_batch(
        [span_json(s) if s.scope == SCOPE else (s.scope, span_json(s)) for s in spans], resource
    )


@dataclass(frozen=True, slots=True)
class ExportSettings:
    url: str
    headers: dict[str, str]
    timeout_s: float
    gzip: bool
    schedule_delay_s: float
    max_queue: int
    batch: int
    ssl_context: ssl.SSLContext | None


def _env(env: Mapping[str, str], name: str, default: str = "") -> str:
    """OTEL_EXPORTER_OTLP_TRACES_<name>, else OTEL_EXPORTER_OTLP_<name>."""
    return (
        env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}") or ""
    ).strip() or default


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        log.warning("%s=%r is not an integer: using %d", name, raw, default)
        return default
    return value if value > 0 else default


def _milliseconds(raw: str, default: int) -> int:
    """OTEL_EXPORTER_OTLP_TIMEOUT: milliseconds, as the specification says."""
    try:
        value = int(raw) if raw else default
    except ValueError:
        log.warning("OTEL_EXPORTER_OTLP_TIMEOUT=%r is not an integer: using %d", raw, default)
        return default
    return value if value > 0 else default


def _pairs(raw: str) -> dict[str, str]:
    """`k1=v1,k2=v2` (values percent-encoded), as OTEL_EXPORTER_OTLP_HEADERS and
    OTEL_RESOURCE_ATTRIBUTES are written."""
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        key, eq, value = item.partition("=")
        if eq and key.strip():
            pairs[unquote(key.strip())] = unquote(value.strip())
    return pairs


def export_settings(env: Mapping[str, str]) -> ExportSettings:
    url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not url:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
        url = base.rstrip("/") + "/v1/traces"
    protocol = _env(env, "PROTOCOL", "http/json")
    if protocol != "http/json":
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s: relaygate exports traces as OTLP/HTTP JSON "
            "(http/json), which the OpenTelemetry Collector and most backends accept",
            protocol,
        )
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context(cafile=_env(env, "CERTIFICATE") or None)
        client_cert = _env(env, "CLIENT_CERTIFICATE")
        if client_cert:
            context.load_cert_chain(client_cert, _env(env, "CLIENT_KEY") or None)
    max_queue = _int(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
    return ExportSettings(
        url=url,
        headers=_pairs(_env(env, "HEADERS")),
        timeout_s=_milliseconds(_env(env, "TIMEOUT"), 10_000) / 1000,
        gzip=_env(env, "COMPRESSION", "none").lower() == "gzip",
        schedule_delay_s=_int(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
        max_queue=max_queue,
        batch=min(_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), max_queue),
        ssl_context=context,
    )


def resource_attributes(role: str, env: Mapping[str, str]) -> dict[str, Any]:
    """OTEL_RESOURCE_ATTRIBUTES, `service.name` from OTEL_SERVICE_NAME (else those
    attributes, else relaygate-<role>), and who made the spans."""
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "relaygate",
    }
    attributes.update(_pairs(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    service = env.get("OTEL_SERVICE_NAME", "").strip()
    attributes["service.name"] = service or attributes.get("service.name") or f"relaygate-{role}"
    return attributes


_RETRYABLE = frozenset({429, 502, 503, 504})
_BACKOFF_S = (0.5, 1.0, 2.0)


class Exporter:
    """Joins queued spans (already JSON text) into OTLP batches and sends them.

    The batches are made on the event loop that records the spans: a timer
    `schedule_delay_s` after the first span, or as soon as a batch is full. The thread
    only sends (blocking HTTP, the GIL released while it waits). Encoding in that
    thread instead made the two fight for the GIL: +40 µs CPU per request in
    handoffs, more than the encoding itself. Spans ended outside a running loop (a
    team's thread) are batched by the thread. A failed batch is retried (429,
    502-504, connection errors) up to 3 times with backoff, then dropped and counted;
    at most `max_queue / batch` batches wait to be sent."""

    def __init__(self, settings: ExportSettings, resource: Mapping[str, Any]) -> None:
        self.settings = settings
        self.resource = dict(resource)
        self.spans: deque[Queued] = deque()
        self.armed = False  # a flush is scheduled on the loop
        self._bodies: deque[tuple[bytes, int]] = deque()  # encoded, to send; span count
        self._wake = threading.Event()
        self._stopping = False
        self._failing = False
        self._conn: http.client.HTTPConnection | None = None
        parts = urlsplit(settings.url)
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {
            **settings.headers,
            "Content-Type": "application/json",
            "User-Agent": "relaygate",
        }
        if settings.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._thread = threading.Thread(target=self._run, name="relaygate-otlp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        """Export what is queued, then end; False when that took over `timeout_s`."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # On the loop ---------------------------------------------------------------------

    def arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop: the thread encodes
            self._wake.set()
            return
        self.armed = True
        loop.call_later(self.settings.schedule_delay_s, self._tick)

    def batch_full(self) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_soon(self.encode_queued)

    def _tick(self) -> None:
        self.armed = False
        self.encode_queued()

    def encode_queued(self) -> None:
        """Encode what is queued, in batches, for the thread to send."""
        spans, batch = self.spans, self.settings.batch
        encoded = False
        while spans:
            taken = [spans.popleft() for _ in range(min(batch, len(spans)))]
            # Batches not sent yet (the thread pops them: only their number is read
            # here, never iterated) hold at most `batch` spans each.
            if (len(self._bodies) + 1) * batch > self.settings.max_queue:
                _QUEUE_FULL.value += len(taken)  # the collector is slow or down
                continue
            self._bodies.append((encode_batch(taken, self.resource), len(taken)))
            encoded = True
        if encoded:
            self._wake.set()

    # In the thread -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.settings.schedule_delay_s)
            self._wake.clear()
            if self.spans and not self.armed:  # ended outside a loop
                self.encode_queued()
            self._send_all()
        self.encode_queued()
        self._send_all()
        if self._conn is not None:
            self._conn.close()

    def _send_all(self) -> None:
        bodies = self._bodies
        while bodies:
            body, count = bodies[0]
            self._send(body, count)
            bodies.popleft()

    def _send(self, body: bytes, count: int) -> None:
        if self.settings.gzip:
            body = gzip.compress(body, compresslevel=1)
        for attempt in range(len(_BACKOFF_S) + 1):
            error = self._post(body)
            if error is None:
                _EXPORTED.value += count
                if self._failing:
                    self._failing = False
                    log.info("OTLP export to %s works again", self.settings.url)
                return
            retry, why = error
            if not retry or attempt == len(_BACKOFF_S) or self._stopping:
                break
            time.sleep(_BACKOFF_S[attempt])
        _EXPORT_FAILED.value += count
        if not self._failing:  # one line per outage, not one per batch
            self._failing = True
            log.warning(
                "OTLP export to %s failed (%s): %d spans dropped; the next failures are "
                "counted in relaygate_trace_spans_dropped_total",
                self.settings.url, why, count,
            )  # fmt: skip

    def _post(self, body: bytes) -> tuple[bool, str] | None:
        """None when the collector took the batch, else (worth a retry, why not)."""
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = self._connect()
            conn.request("POST", self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return True, f"{type(exc).__name__}: {exc}"
        if 200 <= response.status < 300:
            return None
        return response.status in _RETRYABLE, f"HTTP {response.status}"

    def _connect(self) -> http.client.HTTPConnection:
        timeout = self.settings.timeout_s
        context = self.settings.ssl_context
        if context is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)


_exporter: Exporter | None = None


def configure_tracing(
    options: TracingConfig, role: str, env: Mapping[str, str] = os.environ
) -> bool:
    """Start the exporter and make the tracer; True when tracing is on."""
    global _tracer, _exporter
    shutdown_tracing()
    if not tracing_wanted(options, env):
        return False
    settings = export_settings(env)
    sampler = sampler_from(options, env)
    resource = resource_attributes(role, env)
    exporter = Exporter(settings, resource)
    tracer = Tracer(sampler, exporter, producer_spans=options.producer_spans)
    keep_freed_memory()  # the exporter's batches of spans (see memory.py)
    exporter.start()
    _exporter, _tracer = exporter, tracer
    _install_sdk(tracer)
    log.info(
        "tracing on: spans of %s (%s) export over OTLP/HTTP JSON to %s",
        resource["service.name"], sampler.describe(), settings.url,
    )  # fmt: skip
    return True


def shutdown_tracing(timeout_s: float = 1.5) -> None:
    """Export what is buffered, then stop; tracing is off afterwards. An unreachable
    collector is given `timeout_s`: what is left then is dropped."""
    global _tracer, _exporter
    exporter, _exporter, _tracer = _exporter, None, None
    if exporter is None:
        return
    if not exporter.stop(timeout_s):
        log.warning("spans not exported %.1f s after shutdown began: dropped", timeout_s)


# --- the OpenTelemetry API, for team handlers --------------------------------------------


def _install_sdk(tracer: Tracer) -> None:
    """Make the SDK's provider the global one (once per process), with a processor
    that hands its ended spans to our queue: a team's handler spans
    (`trace.get_tracer(...).start_as_current_span(...)`) export with ours."""
    global _provider
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import (
        ALWAYS_OFF,
        ALWAYS_ON,
        ParentBased,
        TraceIdRatioBased,
    )
    from opentelemetry.sdk.trace.sampling import Sampler as SdkSampler

    class Bridge(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ours = _tracer
            if ours is not None:
                ours.record(_from_sdk(span))

    sampler = tracer.sampler
    root: SdkSampler = TraceIdRatioBased(sampler.ratio)
    if sampler.ratio >= 1.0:
        root = ALWAYS_ON
    elif sampler.ratio <= 0.0:
        root = ALWAYS_OFF
    provider = _provider
    if provider is None:
        provider = TracerProvider(
            sampler=ParentBased(root) if sampler.parent_based else root,
            shutdown_on_exit=False,
        )
        provider.add_span_processor(Bridge())
        trace.set_tracer_provider(provider)
        _provider = provider
    else:  # reconfigured: the global provider can be set only once; its sampler follows
        provider.sampler = ParentBased(root) if sampler.parent_based else root


def _from_sdk(span: Any) -> Span:
    """An SDK ReadableSpan as one of ours (ids, kind, times, attributes, status, events)."""
    context = span.get_span_context()
    parent = span.parent
    ours = Span(
        None,
        span.name,
        span.kind.value + 1,  # the API's enum starts at INTERNAL = 0
        dict(span.attributes or {}),
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
        f"{parent.span_id:016x}" if parent is not None else "",
        True,
        context.trace_state.to_header() if context.trace_state else None,
    )
    ours.start_ns = span.start_time or 0
    ours.end_ns = span.end_time or ours.start_ns
    scope = span.instrumentation_scope
    ours.scope = scope.name if scope is not None else "unknown"
    if span.status.status_code.name == "ERROR":
        ours.set_error(span.status.description or "")
    if span.events:
        ours.events = [(e.timestamp, e.name, dict(e.attributes or {})) for e in span.events]
    return ours


def otel_attach(span: Span) -> object:
    """Make `span` the OpenTelemetry API's current span (spans a team's handler makes
    become its children); returns the token for `otel_detach`."""
    return _otel.attach(_otel.set_span(_otel.NonRecordingSpan(_otel.SpanContext(
        int(span.trace_id, 16), int(span.span_id, 16), False, _otel.flags[span.sampled]
    ))))  # fmt: skip


def otel_detach(token: object) -> None:
    _otel.detach(token)  # type: ignore[arg-type]


class _Otel:
    """The OpenTelemetry API's functions, imported once (an import statement per call
    costs ~1 µs)."""

    def __init__(self) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        self.attach = context.attach
        self.detach = context.detach
        self.set_span = trace.set_span_in_context
        self.NonRecordingSpan = NonRecordingSpan
        self.SpanContext = SpanContext
        self.flags = {True: TraceFlags(1), False: TraceFlags(0)}


_otel = _Otel()
