"""Structured logs: the access log at the ingress is one JSON line per request with
its ids, worker lines carry the same correlation and trace ids, and no secret the
client sent (Authorization, Cookie, X-API-Key, configured body fields) reaches any
output: logs or spans."""

from __future__ import annotations

import io
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from contracts.config import LogsConfig
from contracts.telemetry import logs
from tests.support.gateway import wait_until
from tests.telemetry.conftest import PREFIX, ROUTE, Traced

SECRETS = {
    "authorization": "Bearer SENTINEL-AUTH-7f3a",
    "cookie": "session=SENTINEL-COOKIE-91c2",
    "x-api-key": "SENTINEL-KEY-5d0e",
}
BODY_SECRET = "SENTINEL-CARD-4111"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every JSON line of a log; a line that starts like JSON must parse."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def lines_with(text: str, correlation_id: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(text) if line.get("correlation_id") == correlation_id]


@pytest.mark.e2e
@pytest.mark.nats
def test_access_log_line_is_json_with_the_request_ids(traced_nats: Traced) -> None:
    up = traced_nats.up
    correlation_id = f"obs-{uuid.uuid4().hex}"
    trace_id = os.urandom(16).hex()
    response = httpx.get(
        f"{up.url}{PREFIX}/logged?q=1",
        headers={
            "x-correlation-id": correlation_id,
            "traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01",
        },
        timeout=30,
    )
    assert response.status_code == 200
    wait_until(lambda: bool(lines_with(up.log(), correlation_id)), 10, "access log line", up)
    [line] = lines_with(up.log(), correlation_id)
    assert line["logger"] == "relaygate.access"
    assert line["level"] == "info"
    assert line["route"] == ROUTE
    assert line["method"] == "GET"
    assert line["path"] == f"{PREFIX}/logged"
    assert line["status"] == 200
    assert line["bytes"] == len(response.content)
    assert line["trace_id"] == trace_id
    assert line["client"] == "127.0.0.1"
    assert line["duration_ms"] > 0
    assert line["principal"] is None
    assert line["cache"] is None
    assert line["time"].endswith("+00:00")


@pytest.mark.e2e
@pytest.mark.nats
def test_worker_lines_carry_the_correlation_and_trace_ids(traced_nats: Traced) -> None:
    up = traced_nats.up
    correlation_id = f"obs-{uuid.uuid4().hex}"
    trace_id = os.urandom(16).hex()
    response = httpx.get(
        f"{up.url}/refused/x",  # the routing worker logs the refused connection
        headers={
            "x-correlation-id": correlation_id,
            "traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01",
        },
        timeout=30,
    )
    assert response.status_code == 502

    def both() -> bool:
        loggers = {line["logger"] for line in lines_with(up.log(), correlation_id)}
        return loggers >= {"relaygate.access", "relaygate.routing"}

    wait_until(both, 10, "worker and access lines", up)
    lines = lines_with(up.log(), correlation_id)
    assert {line["trace_id"] for line in lines} == {trace_id}
    [worker_line] = [line for line in lines if line["logger"] == "relaygate.routing"]
    assert worker_line["level"] == "warning"


@pytest.mark.e2e
@pytest.mark.nats
def test_no_secret_from_the_request_reaches_any_output(traced_nats: Traced) -> None:
    up = traced_nats.up
    body = json.dumps({"card_number": BODY_SECRET}).encode()
    correlation_ids = []
    for path in (f"{PREFIX}/secret", "/refused/secret", "/nowhere"):
        correlation_id = f"obs-{uuid.uuid4().hex}"
        correlation_ids.append(correlation_id)
        httpx.post(
            f"{up.url}{path}?api_key=SENTINEL-QUERY-22",
            headers={**SECRETS, "x-correlation-id": correlation_id},
            content=body,
            timeout=30,
        )
    for correlation_id in correlation_ids:

        def logged(cid: str = correlation_id) -> bool:
            return bool(lines_with(up.log(), cid))

        wait_until(logged, 10, "access line", up)
    time.sleep(0.5)  # the spans of the last requests: the exporter sends every 0.1 s
    output = up.log() + repr(traced_nats.receiver.spans)
    assert "api_key=[redacted]" in output  # the spans' url.query and url.full
    for secret in [*SECRETS.values(), BODY_SECRET, "SENTINEL-QUERY-22"]:
        for token in (secret, secret.split()[-1].split("=")[-1]):
            assert token not in output


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """configure_logging on a string stream; the root logger restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    yield stream
    logs.shutdown_logging()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("relaygate.test", "relaygate.access"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_structured_fields_are_redacted_and_ids_attached(configured: io.StringIO) -> None:
    logs.configure_logging(
        LogsConfig(format="json", redact_fields=["Card_Number"]), "debug", configured
    )
    token = logs.bind("cid-1", "a" * 32)
    logging.getLogger("relaygate.test").warning(
        "upstream said %s",
        "no",
        extra={
            "headers": [("authorization", "S1"), ("accept", "*/*"), ("x-api-key", "S2")],
            "body": {"card_number": "S3", "nested": {"password": "S4", "kept": "ok"}},
        },
    )
    logs.unbind(token)
    logging.getLogger("relaygate.test").info("outside a request")
    logs.shutdown_logging()
    first, second = json_lines(configured.getvalue())
    assert first["message"] == "upstream said no"
    assert first["correlation_id"] == "cid-1"
    assert first["trace_id"] == "a" * 32
    assert first["headers"] == [
        ["authorization", "[redacted]"],
        ["accept", "*/*"],
        ["x-api-key", "[redacted]"],
    ]
    assert first["body"] == {
        "card_number": "[redacted]",
        "nested": {"password": "[redacted]", "kept": "ok"},
    }
    assert "correlation_id" not in second
    assert not {"S1", "S2", "S3", "S4"} & set(configured.getvalue().split('"'))


def test_levels_per_component_and_access_log_switch(configured: io.StringIO) -> None:
    options = LogsConfig(format="json", level="warning", levels={"test": "debug"}, access_log=False)
    logs.configure_logging(options, None, configured)
    assert logs.access_log() is None
    logging.getLogger("relaygate.test").debug("shown")
    logging.getLogger("relaygate.other").info("hidden")
    logs.shutdown_logging()
    assert [line["message"] for line in json_lines(configured.getvalue())] == ["shown"]


def test_auto_format_is_text_on_a_terminal(configured: io.StringIO) -> None:
    leader, follower = os.openpty()
    with open(follower, "w") as terminal, open(leader, "rb", buffering=0) as reader:
        logs.configure_logging(LogsConfig(), "info", terminal)
        logging.getLogger("relaygate.test").info("for people")
        logs.shutdown_logging()
        text = reader.read(4096).decode()
    assert "INFO relaygate.test: for people" in text
    assert not text.startswith("{")


def test_lines_logged_after_shutdown_are_written_directly(configured: io.StringIO) -> None:
    logs.configure_logging(LogsConfig(format="json"), "info", configured)
    logging.getLogger("relaygate.test").info("queued")
    logs.shutdown_logging()
    logging.getLogger("relaygate.test").warning("while exiting")
    assert [line["message"] for line in json_lines(configured.getvalue())] == [
        "queued",
        "while exiting",
    ]
