"""OpenTelemetry tracing, off unless configured: then `tracer()` is None and callers
skip every span (one `is None` test per request, no span object).

    configure_tracing(config.telemetry.tracing, "ingress")   # once per process
    t = tracer()
    if t is not None:
        span = t.start_span(...)

The W3C `traceparent` travels in the envelope; `parent_context` turns it back into
the parent of the next span, `traceparent_of` writes a span's.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts.config import TracingConfig

log = logging.getLogger("relaygate.telemetry")

_tracer: Tracer | None = None
_provider: object | None = None  # the SDK's TracerProvider, kept to flush at exit
_propagator = TraceContextTextMapPropagator()


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


def configure_tracing(
    options: TracingConfig, role: str, env: Mapping[str, str] = os.environ
) -> bool:
    """Set up the SDK with a batching OTLP/HTTP exporter (the exporter reads its
    endpoint, headers and timeouts from OTEL_EXPORTER_OTLP_*). True when tracing is on."""
    global _tracer, _provider
    if not tracing_wanted(options, env):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": f"relaygate-{role}"}
    sampler = (
        ParentBased(TraceIdRatioBased(options.sample_ratio))
        if options.sample_ratio is not None
        else None  # the SDK reads OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
    )
    provider = TracerProvider(
        resource=Resource.create(attributes),
        sampler=sampler,
        shutdown_on_exit=False,  # shutdown_tracing does it, within a time limit
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _provider = provider
    _tracer = provider.get_tracer("relaygate")
    # A team's handler that makes spans with the OpenTelemetry API joins the same trace,
    # under the worker's CONSUMER span (the current span while it runs).
    trace.set_tracer_provider(provider)
    log.info("tracing on: spans of relaygate-%s export over OTLP/HTTP", role)
    return True


def shutdown_tracing(timeout_s: float = 1.5) -> None:
    """Export what is buffered, then stop; tracing is off afterwards. An unreachable
    collector is given `timeout_s` (the exporter would retry for up to 10 s per batch,
    holding up a restart); what is left then is dropped."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is None:
        return
    from opentelemetry.sdk.trace import TracerProvider

    assert isinstance(provider, TracerProvider)
    flushing = threading.Thread(target=provider.shutdown, name="relaygate-otel-stop", daemon=True)
    flushing.start()
    flushing.join(timeout_s)
    if flushing.is_alive():
        log.warning("spans not exported %.1f s after shutdown began: dropped", timeout_s)


def parent_context(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The remote parent a `traceparent` names; None when it is missing or invalid."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    context = _propagator.extract(carrier)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def traceparent_of(span: Span) -> tuple[str, str | None]:
    """(traceparent, tracestate or None) that make `span` the parent of the next hop."""
    ctx: SpanContext = span.get_span_context()
    state = ctx.trace_state.to_header() if ctx.trace_state else ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}", state or None
