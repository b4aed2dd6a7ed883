"""A real OTLP/HTTP trace receiver for tests: an aiohttp server on its own thread and
loop (tests block in sync clients while the gateway exports), decoding each
`ExportTraceServiceRequest` with opentelemetry-proto into `ReceivedSpan`s.

Both encodings of the OTLP/HTTP spec: protobuf (`application/x-protobuf`) and JSON
(`application/json`). JSON is parsed into the same protobuf message by
`google.protobuf.json_format`, with unknown fields refused: an independent check that
what the gateway sends matches the opentelemetry-proto definitions. (OTLP JSON writes
trace and span ids as hex, where the protobuf JSON mapping wants base64: converted
first, as the Collector does.)"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.processes import free_port

# opentelemetry.proto.trace.v1.Span.SpanKind
KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any] = field(hash=False)
    error: bool = False


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


_HEX_IDS = ("traceId", "spanId", "parentSpanId")


def _ids_as_base64(span: dict[str, Any]) -> None:
    for key in _HEX_IDS:
        if key in span:
            span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    for link in span.get("links", []):
        _ids_as_base64(link)


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """An OTLP/HTTP JSON body as the protobuf message; raises on any field the
    definitions do not have, or a value of the wrong type."""
    data = json.loads(body)
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _ids_as_base64(span)
    request = ExportTraceServiceRequest()
    json_format.ParseDict(data, request, ignore_unknown_fields=False)
    return request


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def decode(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        name=span.name,
                        kind=KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        error=span.status.code == 2,  # STATUS_CODE_ERROR
                    )
                )
    return spans


class OtlpReceiver:
    """`POST /v1/traces` on 127.0.0.1:`port`; `spans` grows as exports arrive."""

    def __init__(self, port: int | None = None, *, discard: bool = False) -> None:
        self.port = port or free_port()
        self.discard = discard  # take exports without decoding them (the benchmark's)
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.content_types: set[str] = set()
        self.errors: list[str] = []  # bodies that did not parse, and why
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        """OTEL_EXPORTER_OTLP_ENDPOINT (the exporter adds /v1/traces)."""
        return f"http://127.0.0.1:{self.port}"

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        as_json = request.content_type == "application/json"
        spans: list[ReceivedSpan] = []
        if not self.discard:
            try:
                message = parse_json(body) if as_json else parse_protobuf(body)
            except Exception as exc:
                with self._lock:
                    self.errors.append(f"{request.content_type}: {exc!r}")
                return web.Response(status=400, text=str(exc))
            spans = decode(message)
        with self._lock:
            self.requests += 1
            self.content_types.add(request.content_type)
            self.spans.extend(spans)
        if as_json:
            return web.Response(body=b"{}", content_type="application/json")
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> OtlpReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def wait_for(
        self, trace_id: str, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 20.0
    ) -> list[ReceivedSpan]:
        """The spans of `trace_id` once `done(spans)` holds; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.trace(trace_id)
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"trace {trace_id}: not complete after {timeout:.0f}s; got "
                    + ", ".join(f"{s.kind} {s.name} ({s.service})" for s in spans)
                )
            time.sleep(0.05)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="an OTLP/HTTP receiver that drops what it gets")
    parser.add_argument("--port", type=int, required=True)
    receiver = OtlpReceiver(parser.parse_args().port, discard=True).start()
    try:
        threading.Event().wait()
    finally:
        receiver.stop()
