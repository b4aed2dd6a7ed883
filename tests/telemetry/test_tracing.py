"""One request through ingress -> bus -> routing worker -> a real upstream is one trace:
SERVER at the ingress (with the bus request's messaging attributes), CONSUMER in the
worker (a child of the ingress span, carried in the envelope), CLIENT for the upstream
call, whose `traceparent` the upstream receives. A client's `traceparent` is continued.
(A PRODUCER span per bus request is opt-in: tests/telemetry/test_recorder.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import RelaygateUp, running_up, tail, terminate
from tests.support.processes import free_port
from tests.support.reflector import Reflector
from tests.telemetry.conftest import PREFIX, ROUTE, Traced, gateway_config
from tests.telemetry.otlp import ReceivedSpan

pytestmark = pytest.mark.e2e

BUSES = [
    pytest.param("nats", marks=pytest.mark.nats, id="nats"),
    pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.slow], id="kafka"),
]


@pytest.fixture(params=BUSES)
def traced(request: pytest.FixtureRequest) -> Traced:
    gateway: Traced = request.getfixturevalue(f"traced_{request.param}")
    return gateway


def _complete(spans: list[ReceivedSpan]) -> bool:
    return {"SERVER", "CONSUMER", "CLIENT"} <= {s.kind for s in spans}


def _one(spans: list[ReceivedSpan], kind: str) -> ReceivedSpan:
    found = [s for s in spans if s.kind == kind]
    assert len(found) == 1, f"want one {kind} span, got {found}"
    return found[0]


def _upstream_traceparent(response: httpx.Response) -> str:
    headers = dict(response.json()["headers"])
    traceparent: str = headers["traceparent"]
    return traceparent


def test_one_request_is_one_trace_across_the_bus(traced: Traced) -> None:
    response = httpx.get(f"{traced.url}{PREFIX}/items/7?x=1", timeout=30)
    assert response.status_code == 200, response.text
    received = _upstream_traceparent(response)
    trace_id = received.split("-")[1]

    spans = traced.receiver.wait_for(trace_id, _complete)
    server = _one(spans, "SERVER")
    consumer = _one(spans, "CONSUMER")
    client = _one(spans, "CLIENT")

    assert server.parent_span_id == ""  # the client sent no traceparent: a new trace
    assert server.service == "relaygate-ingress"
    assert server.name == f"GET {PREFIX}/{{rest:path}}"
    assert server.attributes["http.route"] == f"{PREFIX}/{{rest:path}}"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.request.method"] == "GET"

    topic = f"rg.req.{ROUTE}"
    assert server.attributes["messaging.system"] == traced.bus
    assert server.attributes["messaging.destination.name"] == topic
    assert not [s for s in spans if s.kind == "PRODUCER"]  # opt-in: producer_spans

    # The envelope carries the ingress span's context, not the client's header.
    assert consumer.parent_span_id == server.span_id
    assert consumer.service == "relaygate-worker-routing"
    assert consumer.attributes["messaging.operation"] == "process"
    assert consumer.attributes["messaging.destination.name"] == topic
    assert consumer.attributes["messaging.system"] == traced.bus

    assert client.parent_span_id == consumer.span_id
    assert client.attributes["http.request.method"] == "GET"
    assert client.attributes["http.response.status_code"] == 200
    assert client.attributes["url.full"].endswith("/items/7?x=1")
    assert client.attributes["server.address"] == "127.0.0.1"
    # The upstream sees the CLIENT span as its parent, sampled (flags may add "random").
    version, _, span_id, flags = received.split("-")
    assert (version, span_id) == ("00", client.span_id)
    assert int(flags, 16) & 1
    assert not any(s.error for s in spans)
    # Sent as OTLP/HTTP JSON, every body valid against the opentelemetry-proto messages.
    assert traced.receiver.content_types == {"application/json"}
    assert traced.receiver.errors == []


def test_client_traceparent_is_continued(traced: Traced) -> None:
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    response = httpx.get(
        f"{traced.url}{PREFIX}/continued",
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01", "tracestate": "vendor=abc"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    received = _upstream_traceparent(response)
    assert received.split("-")[1] == trace_id
    assert parent_id not in received  # the gateway's own span, not the client's

    spans = traced.receiver.wait_for(trace_id, _complete)
    server = _one(spans, "SERVER")
    assert server.parent_span_id == parent_id
    assert _one(spans, "CONSUMER").parent_span_id == server.span_id
    assert _one(spans, "CLIENT").parent_span_id == _one(spans, "CONSUMER").span_id
    headers = dict(response.json()["headers"])
    assert headers.get("tracestate") == "vendor=abc"


def test_upstream_error_marks_the_spans(traced: Traced) -> None:
    response = httpx.get(
        f"{traced.url}{PREFIX}/broken", headers={"x-reflect-status": "503"}, timeout=30
    )
    assert response.status_code == 503
    trace_id = _upstream_traceparent(response).split("-")[1]
    # A GET is retried once (retries.attempts: 2): each attempt is its own CLIENT span.
    spans = traced.receiver.wait_for(
        trace_id, lambda spans: _complete(spans) and sum(s.kind == "CLIENT" for s in spans) == 2
    )
    consumer = _one(spans, "CONSUMER")
    for client in (s for s in spans if s.kind == "CLIENT"):
        assert client.error
        assert client.attributes["http.response.status_code"] == 503
        assert client.parent_span_id == consumer.span_id
    assert consumer.error
    assert _one(spans, "SERVER").error


@pytest.mark.nats
def test_unreachable_collector_neither_fails_requests_nor_holds_up_the_stop(
    tmp_path: Path, reflector: Reflector, request: pytest.FixtureRequest
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = gateway_config(request, "nats", reflector.url)
    up = RelaygateUp(tmp_path, "dead-collector", config, env={"OTEL_EXPORTER_OTLP_ENDPOINT": dead})
    up.start()
    try:
        up.wait_ready()
        for i in range(5):
            assert httpx.get(f"{up.url}{PREFIX}/{i}", timeout=30).status_code == 200
    finally:
        code, seconds = terminate(up)
    assert code == 0, tail(up.log())
    # Two children each give the exporter at most 1.5 s, not its 10 s of retries.
    assert seconds < 8, f"stopping took {seconds:.1f}s"


@pytest.mark.nats
def test_tracing_off_forwards_the_request_trace_id_without_spans(
    tmp_path: Path, reflector: Reflector, request: pytest.FixtureRequest
) -> None:
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    config = gateway_config(request, "nats", reflector.url)
    with running_up(tmp_path, "untraced", config) as up:
        response = httpx.get(
            f"{up.url}{PREFIX}/off",
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
            timeout=30,
        )
    assert response.status_code == 200
    assert _upstream_traceparent(response) == f"00-{trace_id}-{parent_id}-01"
    assert "tracing on" not in up.log()
