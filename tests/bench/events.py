"""Row (e): durable event intake. wrk posts binary-mode CloudEvents, each with its own
id, to `POST /events/bench.created`; the ingress checks the data against the type's JSON
Schema and answers 202 only after JetStream acknowledged the publish."""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.bench.probe import TargetBroken
from tests.bench.wrk import write_script

EVENT_TYPE = "bench.created"
EVENT_PATH = f"/events/{EVENT_TYPE}"
DATA = b'{"order_id":"o-1","amount":1250,"currency":"EUR"}'
# What the gateway config accepts at EVENT_PATH (the shape of order.created).
EVENTS_CONFIG: dict[str, object] = {
    "types": {
        EVENT_TYPE: {
            "json_schema": {
                "type": "object",
                "required": ["order_id", "amount", "currency"],
                "properties": {
                    "order_id": {"type": "string", "minLength": 1},
                    "amount": {"type": "integer", "minimum": 0},
                    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                },
            }
        }
    }
}

# Each wrk thread numbers its events; the run's start time keeps runs apart, so that no
# event is a duplicate the broker would drop.
_REQUEST = """
local counter = 0
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
init = function(args)
  run = tostring(os.time())
end
request = function()
  counter = counter + 1
  return wrk.format("POST", nil, {
    ["ce-id"] = run .. "-" .. tostring(tid) .. "-" .. tostring(counter),
    ["ce-source"] = "/bench",
    ["ce-type"] = "EVENT_TYPE",
    ["ce-specversion"] = "1.0",
    ["content-type"] = "application/json",
  }, 'DATA')
end
""".replace("EVENT_TYPE", EVENT_TYPE).replace("DATA", DATA.decode())


def write_event_script(directory: Path) -> Path:
    return write_script(directory, extra=_REQUEST, name="bench-events.lua")


def wait_until_accepted(url: str, timeout: float = 60.0) -> None:
    """One event posted until it gets 202 (JetStream may still be starting)."""
    parts = urlsplit(url)
    if parts.hostname != "127.0.0.1":
        raise ValueError(f"refusing non-loopback URL {url}")
    deadline = time.monotonic() + timeout
    symptom = "no answer"
    headers = {
        "ce-id": f"probe-{time.time_ns()}",
        "ce-source": "/bench",
        "ce-type": EVENT_TYPE,
        "ce-specversion": "1.0",
        "content-type": "application/json",
    }
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        try:
            conn.request("POST", parts.path, body=DATA, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status == 202:
                return
            symptom = f"HTTP {response.status}: {body[:300].decode(errors='replace')}"
        except (OSError, http.client.HTTPException) as exc:
            symptom = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        time.sleep(0.5)
    raise TargetBroken(f"POST {url} did not answer 202 within {timeout:.0f}s; last: {symptom}")
