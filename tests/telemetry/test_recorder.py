"""The span recorder without processes: W3C traceparent rules, sampling like the
OpenTelemetry SDK's, a bounded queue that drops (and counts) instead of waiting, and
OTLP JSON that parses into opentelemetry-proto's ExportTraceServiceRequest."""

from __future__ import annotations

import os

import pytest
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.trace import SpanKind

from contracts.bus import Message
from contracts.bus.memory import MemoryBus, MemoryHub
from contracts.config import TracingConfig
from contracts.telemetry import tracing
from contracts.telemetry.tracing import (
    CLIENT,
    CONSUMER,
    SERVER,
    Exporter,
    ExportSettings,
    Sampler,
    Tracer,
    encode_batch,
    export_settings,
    parse_traceparent,
    resource_attributes,
    sampler_from,
)
from contracts.topics import Topics
from tests.telemetry.otlp import decode, parse_json

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _tracer(max_queue: int = 100, sampler: Sampler | None = None) -> Tracer:
    settings = ExportSettings(
        url="http://127.0.0.1:9/v1/traces", headers={}, timeout_s=1, gzip=False,
        schedule_delay_s=5, max_queue=max_queue, batch=max_queue, ssl_context=None,
    )  # fmt: skip
    return Tracer(sampler or Sampler(1.0), Exporter(settings, {"service.name": "t"}))


@pytest.mark.parametrize(
    ("header", "valid"),
    [
        (f"00-{TRACE}-{SPAN}-01", True),
        (f"00-{TRACE}-{SPAN}-00", True),
        (f"01-{TRACE}-{SPAN}-01-future", True),  # a later version may add fields
        (f"00-{TRACE}-{SPAN}-03", True),  # flags other than the sampled bit
        (f"00-{TRACE.upper()}-{SPAN}-01", True),  # read leniently, as lower case
        (f"00-{TRACE}-{SPAN}-01-extra", False),
        (f"ff-{TRACE}-{SPAN}-01", False),
        (f"00-{'0' * 32}-{SPAN}-01", False),
        (f"00-{TRACE}-{'0' * 16}-01", False),
        (f"00-{TRACE[:-1]}x-{SPAN}-01", False),
        ("", False),
    ],
)
def test_traceparent_rules(header: str, valid: bool) -> None:
    parent = parse_traceparent(header, "v=1")
    assert (parent is not None) is valid
    if parent is not None:
        assert (parent.trace_id, parent.span_id, parent.tracestate) == (TRACE, SPAN, "v=1")
        assert parent.sampled is (int(header.split("-")[3], 16) & 1 == 1)


def test_children_continue_the_parent_and_follow_its_sampled_flag() -> None:
    tracer = _tracer()
    sampled = tracer.start("GET", SERVER, {}, parse_traceparent(f"00-{TRACE}-{SPAN}-01", "a=b"))
    assert (sampled.trace_id, sampled.parent_id, sampled.sampled) == (TRACE, SPAN, True)
    assert sampled.traceparent() == f"00-{TRACE}-{sampled.span_id}-01"
    token = tracing.use(sampled)
    try:
        child = tracer.start("publish", CLIENT, {})  # the current span is its parent
    finally:
        tracing.restore(token)
    assert (child.trace_id, child.parent_id, child.tracestate) == (TRACE, sampled.span_id, "a=b")
    unsampled = tracer.start("GET", SERVER, {}, parse_traceparent(f"00-{TRACE}-{SPAN}-00"))
    assert not unsampled.sampled
    assert unsampled.traceparent().endswith("-00")
    unsampled.end()
    child.end()
    [queued] = tracer._queue  # unsampled spans are never queued
    assert isinstance(queued, str)
    assert f'"spanId":"{child.span_id}"' in queued


def test_ratio_sampling_decides_like_the_sdk() -> None:
    ours = Sampler(0.25, parent_based=False)
    sdk = TraceIdRatioBased(0.25)
    decisions = []
    for _ in range(2000):
        trace_id = os.urandom(16).hex()
        mine = ours.root(trace_id)
        theirs = sdk.should_sample(None, int(trace_id, 16), "x", SpanKind.SERVER).decision
        assert mine is (theirs == Decision.RECORD_AND_SAMPLE)
        decisions.append(mine)
    assert 0.18 < sum(decisions) / len(decisions) < 0.32


def test_sampler_from_configuration_and_environment() -> None:
    assert sampler_from(TracingConfig(sample_ratio=0.1), {}).describe() == (
        "parentbased_traceidratio 0.1"
    )
    env = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    assert sampler_from(TracingConfig(), env).describe() == "traceidratio 0.5"
    assert sampler_from(TracingConfig(), {}).describe() == "parentbased_traceidratio 1"
    env = {"OTEL_TRACES_SAMPLER": "jaeger_remote"}  # not supported: the default
    assert sampler_from(TracingConfig(), env).describe() == "parentbased_traceidratio 1"


def test_a_full_queue_drops_and_counts() -> None:
    tracer = _tracer(max_queue=3)
    before = tracing._QUEUE_FULL.value
    for _ in range(5):
        tracer.start("x", SERVER, {}).end()
    assert len(tracer._queue) == 3
    assert tracing._QUEUE_FULL.value - before == 2


def test_otlp_json_parses_into_the_proto_message() -> None:
    tracer = _tracer()
    root = tracer.start(
        'GET "/é"', SERVER,
        {"s": "é\n\"", "i": 2**40, "b": True, "f": 0.5, "l": ["a", 1], "o": object()},
    )  # fmt: skip
    root.set_error("status 503")
    child = tracer.start("call", CLIENT, {"k": "v"}, root)
    child.events = [(child.start_ns, "retry", {"attempt": 2})]
    child.scope = "team.orders"
    child.end()
    root.end()
    body = encode_batch(list(tracer._queue), resource_attributes("ingress", {}))
    request = parse_json(body)  # raises on a field or type the proto does not have
    spans = {s.name: s for s in decode(request)}
    server, client = spans['GET "/é"'], spans["call"]
    assert server.service == "relaygate-ingress"
    assert server.kind == "SERVER"
    assert server.error
    assert server.attributes["s"] == 'é\n"'
    assert server.attributes["i"] == 2**40
    assert server.attributes["b"] is True
    assert server.attributes["f"] == 0.5
    assert client.parent_span_id == server.span_id == root.span_id
    assert client.trace_id == root.trace_id
    scopes = {s.scope.name for s in request.resource_spans[0].scope_spans}
    assert scopes == {"relaygate", "team.orders"}
    [event] = (
        next(s for s in request.resource_spans[0].scope_spans if s.scope.name != "relaygate")
        .spans[0]
        .events
    )
    assert event.name == "retry"


def test_attributes_of_ids_past_the_cache_encode_like_the_others() -> None:
    """A key with more distinct values than the fragment cache holds (message ids) takes
    the prefix path: the same JSON, escaping included."""
    tracer = _tracer(max_queue=2000)
    values = [f'id-{n}-"é"' for n in range(600)]
    for value in values:
        tracer.start("process", CONSUMER, {"test.message.id": value, "test.n": 7}).end()
    spans = decode(parse_json(encode_batch(list(tracer._queue), {})))
    assert [s.attributes["test.message.id"] for s in spans] == values
    assert {s.attributes["test.n"] for s in spans} == {7}


def test_settings_from_the_standard_variables() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b,x=1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BSP_MAX_QUEUE_SIZE": "64",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
    }
    settings = export_settings(env)
    assert settings.url == "http://collector:4318/v1/traces"
    assert settings.headers == {"api-key": "a b", "x": "1"}
    assert (settings.timeout_s, settings.gzip, settings.schedule_delay_s) == (2.5, True, 0.1)
    assert (settings.max_queue, settings.batch) == (64, 64)
    traces = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c:4318/x", **env}
    assert export_settings(traces).url == "https://c:4318/x"
    attrs = resource_attributes(
        "worker-routing", {"OTEL_RESOURCE_ATTRIBUTES": "service.name=a,deployment.environment=p"}
    )
    assert attrs["service.name"] == "a"
    assert attrs["deployment.environment"] == "p"
    named = resource_attributes("ingress", {"OTEL_SERVICE_NAME": "edge"})
    assert named["service.name"] == "edge"


@pytest.mark.parametrize("producer_spans", [False, True])
async def test_a_bus_request_is_a_producer_span_only_when_asked(
    producer_spans: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off (the default): the requesting span carries the messaging attributes and no
    span is added. On: a PRODUCER span, child of the requesting span, per request."""
    tracer = _tracer()
    tracer.producer_spans = producer_spans
    monkeypatch.setattr(tracing, "_tracer", tracer)
    hub = MemoryHub()
    requester = MemoryBus(topics=Topics(), node_id="ingress", hub=hub)
    responder = MemoryBus(topics=Topics(), node_id="worker", hub=hub)
    await requester.connect()
    await responder.connect()

    async def answer(message: Message) -> None:
        address, correlation_id = message.data.decode().split("|")
        await responder.reply(address, b"ok", correlation_id=correlation_id)

    await responder.subscribe("rg.req.orders", answer)
    server = tracer.start("GET /orders", SERVER, {"http.request.method": "GET"})
    token = tracing.use(server)
    try:
        body = f"{requester.reply_address('c-1')}|c-1".encode()
        reply = await requester.request("rg.req.orders", body, correlation_id="c-1", timeout=5)
    finally:
        tracing.restore(token)
        await requester.close()
        await responder.close()
    assert reply.data == b"ok"
    server.end()
    queued = list(tracer._exporter.spans)
    spans = {span.kind: span for span in decode(parse_json(encode_batch(queued, {})))}
    if producer_spans:
        assert set(spans) == {"SERVER", "PRODUCER"}
        producer = spans["PRODUCER"]
        assert producer.parent_span_id == server.span_id
        assert producer.name == "publish rg.req.orders"
        assert producer.attributes["messaging.destination.name"] == "rg.req.orders"
        assert "messaging.system" not in spans["SERVER"].attributes
    else:
        assert set(spans) == {"SERVER"}
        assert spans["SERVER"].attributes["messaging.system"] == "memory"
        assert spans["SERVER"].attributes["messaging.destination.name"] == "rg.req.orders"
