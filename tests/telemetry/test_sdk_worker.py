"""A team's worker written with the SDK (run on FastStream by `relaygate up`) continues
the trace: its CONSUMER span is a child of the ingress span, spans the handler makes with
the OpenTelemetry API nest under it, and its log lines carry the request's ids."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import running_up, wait_until
from tests.telemetry.otlp import OtlpReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

TEAM_WORKER = '''\
"""A team's worker: one span of its own and one log line per request."""

import logging

from opentelemetry import trace

from workers.sdk import Request, Response, Worker

worker = Worker("orders")
log = logging.getLogger("team.orders")
tracer = trace.get_tracer("team.orders")


@worker.handler
async def handle(request: Request) -> Response:
    with tracer.start_as_current_span("load order"):
        log.info("order %s looked up", request.params["id"])
    return Response.json({"id": request.params["id"]})
'''


def test_sdk_worker_continues_the_trace_and_logs_with_the_ids(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "team_orders.py").write_text(TEAM_WORKER)
    config = {
        "routes": [
            {
                "name": "orders",
                "when": {"path": "/orders/{id}"},
                "to": {"type": "worker", "topic": "orders"},
            }
        ],
        "workers": [{"type": "module", "target": "team_orders:worker"}],
    }
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    trace_id, correlation_id = os.urandom(16).hex(), f"obs-{uuid.uuid4().hex}"
    with running_up(tmp_path, "team", config, env=env, python_path=[modules]) as up:
        response = httpx.get(
            f"{up.url}/orders/42",
            headers={
                "traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01",
                "x-correlation-id": correlation_id,
            },
            timeout=30,
        )
        assert response.json() == {"id": "42"}
        spans = receiver.wait_for(
            trace_id, lambda spans: {"SERVER", "CONSUMER", "INTERNAL"} <= {s.kind for s in spans}
        )

        def team_line() -> bool:
            return "order 42 looked up" in up.log()

        wait_until(team_line, 10, "the team's log line", up)
        lines = [json.loads(line) for line in up.log().splitlines() if "order 42" in line]
    server = next(s for s in spans if s.kind == "SERVER")
    consumer = next(s for s in spans if s.kind == "CONSUMER")
    own = next(s for s in spans if s.kind == "INTERNAL")
    assert consumer.parent_span_id == server.span_id
    assert consumer.service == "relaygate-worker-module"
    assert consumer.attributes["messaging.system"] == "nats"
    assert own.name == "load order"
    assert own.parent_span_id == consumer.span_id
    [line] = lines
    assert line["logger"] == "team.orders"
    assert line["correlation_id"] == correlation_id
    assert line["trace_id"] == trace_id
