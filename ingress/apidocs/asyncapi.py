"""The AsyncAPI 3.0 document of the bus as one reader may see it: the request topics
of its routes, the reply inboxes, the documented event topics, each message an Avro
envelope. Operations are those of a worker or consumer on the bus: it receives."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from contracts.codec import load_schemas
from contracts.config import Config, UpstreamTarget
from contracts.topics import Topics
from ingress.apidocs.access import Reader

AVRO_FORMAT = "application/vnd.apache.avro;version=1.9.0"
AVRO_CONTENT = "application/vnd.apache.avro"
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


def envelope_schema() -> dict[str, Any]:
    """The newest released envelope schema (contracts/schemas/envelope.v<N>.avsc)."""
    return load_schemas()[-1].schema


def _message(name: str, title: str, summary: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": AVRO_CONTENT,
        "payload": {"$ref": "#/components/schemas/envelope"},
        "correlationId": {"location": "$message.payload#/correlationid"},
    }


def build_asyncapi(config: Config, reader: Reader, envelope: dict[str, Any]) -> dict[str, Any]:
    docs = config.docs
    topics = Topics(config.bus.prefix)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    routes_of: dict[str, list[str]] = {}
    for route in config.routes:
        if reader.sees(route.docs.roles):
            topic = route.name if isinstance(route.to, UpstreamTarget) else route.to.topic
            routes_of.setdefault(topic, []).append(route.name)
    if routes_of:
        channels["reply"] = {
            "address": topics.reply("{node}"),
            "title": "Reply inbox of an ingress node",
            "description": "A worker answers on the `replyto` of the request it got, "
            "with the request's correlation id.",
            "parameters": {"node": {"description": "The ingress node's id"}},
            "messages": {"reply": {"$ref": "#/components/messages/httpReply"}},
        }
    for topic, routes in routes_of.items():
        channel = _unique("request_" + _UNSAFE_ID.sub("_", topic), channels)
        channels[channel] = {
            "address": topics.request(topic),
            "title": f"Requests of route(s) {', '.join(routes)}",
            "messages": {"request": {"$ref": "#/components/messages/httpRequest"}},
        }
        operations[_unique("serve_" + channel[len("request_") :], operations)] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"Answer the requests of route(s) {', '.join(routes)}",
            "messages": [{"$ref": f"#/channels/{channel}/messages/request"}],
            "reply": {
                "address": {"location": "$message.payload#/replyto"},
                "channel": {"$ref": "#/channels/reply"},
                "messages": [{"$ref": "#/channels/reply/messages/reply"}],
            },
        }
    for event in docs.events:
        if not reader.sees(event.roles):
            continue
        channel = _unique("event_" + _UNSAFE_ID.sub("_", event.name), channels)
        channels[channel] = {
            "address": topics.event(event.name),
            "title": f"Event {event.name}",
            "messages": {"event": {"$ref": "#/components/messages/event"}},
        }
        if event.description:
            channels[channel]["description"] = event.description
        operations[_unique("consume_" + channel[len("event_") :], operations)] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": event.summary or f"Consume {event.name} events",
            "messages": [{"$ref": f"#/channels/{channel}/messages/event"}],
        }
    document: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {"title": docs.title, "version": docs.version},
        "defaultContentType": AVRO_CONTENT,
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {"envelope": {"schemaFormat": AVRO_FORMAT, "schema": envelope}},
            "messages": {
                "httpRequest": _message(
                    "httpRequest", "HTTP request", "An HTTP request as an envelope (http.request)"
                ),
                "httpReply": _message(
                    "httpReply", "HTTP reply", "The answer to a request (http.reply)"
                ),
                "event": _message("event", "Event", "An event (type event.<name>)"),
            },
        },
    }
    if docs.description:
        document["info"]["description"] = docs.description
    server = _server(config)
    if server is not None:
        document["servers"] = {"bus": server}
    return document


def _server(config: Config) -> dict[str, Any] | None:
    """The bus, without credentials; none for the embedded NATS (its address is local)."""
    if config.bus.url is None:
        return None
    parts = urlsplit(config.bus.url)
    return {"host": parts.netloc.rpartition("@")[2], "protocol": parts.scheme}


def _unique(name: str, taken: dict[str, Any]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate
