"""Event intake: `POST <events.path>/<type>` takes a CloudEvent over HTTP, in structured
mode (`Content-Type: application/cloudevents+json`, the whole event in the body) or
binary mode (`ce-id`, `ce-source`, `ce-type`, `ce-specversion` headers, the data in the
body), checks its data against the type's schema (contracts/events), and answers 202
only after the broker stored it on `<prefix>.events`, the stream the webhook bridge
delivers. The stored message's id is derived from the event's source and id, so a
producer retrying the same event is deduplicated by the broker.

Errors: an unknown type is 404; a malformed event 400 (which attribute, what is wrong);
data that fails its schema 422 with `errors: [{pointer, message}]`, pointers into the
event's data; another media type 415.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import logging

import orjson

from contracts.bus import Bus, NotConnected, PayloadTooLarge
from contracts.bus.errors import TopicUnavailable
from contracts.bus.streams import Streams, durable
from contracts.codec import EnvelopeCodec
from contracts.config import Config
from contracts.envelope import EVENT_PREFIX, Envelope, HttpInfo, Principal, now_ms
from contracts.events import AVRO_CONTENT_TYPES, EventRegistry, EventSchema, SchemaError
from ingress.policies import EdgePolicy
from ingress.request import Refused, RequestHead
from ingress.responses import Headers, problem_parts

log = logging.getLogger("relaygate.ingress.events")

STRUCTURED = "application/cloudevents+json"
_REQUIRED = ("id", "source", "specversion", "type")
_KNOWN = frozenset({*_REQUIRED, "datacontenttype", "dataschema", "subject", "time"})
_ACCEPTED_BODY = b'{"status":"accepted"}'
_ACCEPTED_HEADERS = (
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_ACCEPTED_BODY)).encode()),
)


def message_id(source: str, event_id: str) -> str:
    """The broker's dedupe id of an event: CloudEvents says source + id are unique."""
    return hashlib.sha256(f"{source}\0{event_id}".encode()).hexdigest()[:32]


class Invalid(Exception):
    """The event's data does not fit its schema: answered 422 with every error."""

    def __init__(self, event_type: str, errors: list[SchemaError]) -> None:
        super().__init__(errors[0].message)
        self.event_type = event_type
        self.errors = errors


class EventIntake:
    """Built once per config (`policies` by the app's PolicyState)."""

    def __init__(
        self,
        config: Config,
        bus: Bus,
        codec: EnvelopeCodec,
        registry: EventRegistry,
        policies: tuple[EdgePolicy, ...],
    ) -> None:
        self.bus = bus
        # None for a bus without durable streams: `durable` says so on the first event.
        self.streams = bus if isinstance(bus, Streams) else None
        self.codec = codec
        self.registry = registry
        self.policies = policies
        self.prefix = config.events.path + "/"
        self.raw_prefix = self.prefix.encode()
        self.max_body_bytes = config.events.max_body_bytes
        self.topic = bus.topics.events()
        self.retry_after = str(config.ingress.retry_after_s).encode()

    async def answer(
        self, head: RequestHead, body: bytes, principal: Principal | None
    ) -> tuple[int, Headers, bytes]:
        """The response to one event, once it is stored (202) or found invalid (422):
        status, headers (with the length) and body. Other refusals raise `Refused`."""
        event_type = head.path[len(self.prefix) :]
        schema = self.registry.get(event_type)
        if schema is None:
            raise Refused(
                404,
                "unknown-event-type",
                "Unknown event type",
                f"no event type {event_type!r} is accepted here",
            )
        if head.method != "POST":
            raise Refused(
                405,
                "method-not-allowed",
                "Method not allowed",
                "events are sent with POST",
                [(b"allow", b"POST")],
            )
        try:
            envelope = self._envelope(event_type, schema, head, body, principal)
        except Invalid as invalid:
            return _invalid(head, invalid)
        await self._store(envelope)
        return 202, [*_ACCEPTED_HEADERS, (b"x-correlation-id", head.cid)], _ACCEPTED_BODY

    async def _store(self, envelope: Envelope) -> None:
        streams = self.streams or durable(self.bus)
        try:
            await streams.publish_durable(
                self.topic,
                self.codec.encode(envelope),
                msg_id=message_id(envelope.source, envelope.id),
            )
        except PayloadTooLarge as exc:
            raise Refused(
                413, "body-too-large", "Event too large", f"above the bus limit: {exc}"
            ) from None
        except (NotConnected, TopicUnavailable) as exc:
            log.warning("event %s not stored: %r", envelope.id, exc)
            raise Refused(
                503,
                "bus-unavailable",
                "Message bus unavailable",
                "the event could not be stored; it was not accepted, send it again",
                [(b"retry-after", self.retry_after)],
            ) from None

    def _envelope(
        self,
        event_type: str,
        schema: EventSchema,
        head: RequestHead,
        body: bytes,
        principal: Principal | None,
    ) -> Envelope:
        content_type = ""
        attributes: dict[str, str] = {}
        for name, value in head.headers:
            if name.startswith("ce-"):
                attributes[name[3:]] = value
            elif name == "content-type":
                content_type = value
        media = content_type.split(";", 1)[0].strip().lower()
        if media == STRUCTURED:
            attributes, data = _structured(body, event_type, schema)
        elif media.startswith("application/cloudevents"):
            raise Refused(
                415,
                "unsupported-event-format",
                "Unsupported event format",
                f"{media} is not taken: send one event as {STRUCTURED}, or in binary mode",
            )
        else:
            if not attributes:
                raise _bad(
                    "send a CloudEvent: ce-id, ce-source, ce-type and ce-specversion headers "
                    f"with the data as the body (binary mode), or the whole event as {STRUCTURED}"
                )
            _check_attributes(attributes, event_type, "ce-")
            if content_type:
                attributes["datacontenttype"] = content_type
            data = body
            _check_binary_data(event_type, schema, media, body)
        extensions = [
            (f"ce-{name}", value) for name, value in attributes.items() if name not in _KNOWN
        ]
        return Envelope(
            id=attributes["id"],
            source=attributes["source"],
            type=EVENT_PREFIX + event_type,
            time=_time(attributes.get("time")),
            subject=event_type,
            datacontenttype=attributes.get("datacontenttype"),
            data=data,
            correlationid=head.correlation,
            traceparent=head.traceparent,
            tracestate=head.tracestate,
            principal=principal,
            http=HttpInfo(headers=extensions) if extensions else None,
        )


def _structured(body: bytes, event_type: str, schema: EventSchema) -> tuple[dict[str, str], bytes]:
    """The attributes and data of a structured-mode event, checked."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise _bad("a structured event is a JSON object")
    attributes: dict[str, str] = {}
    for name, value in event.items():
        if name in ("data", "data_base64"):
            continue
        if not isinstance(value, str | int | bool):
            raise _bad(f"attribute {name!r} must be a string, number or boolean")
        attributes[name] = value if isinstance(value, str) else orjson.dumps(value).decode()
    _check_attributes(attributes, event_type, "")
    content_type = attributes.get("datacontenttype", "application/json")
    media = content_type.split(";", 1)[0].strip().lower()
    if "data_base64" in event:
        if "data" in event:
            raise _bad("give data or data_base64, not both")
        try:
            data = base64.b64decode(str(event["data_base64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _bad(f"data_base64 is not base64: {exc}") from None
        _check_binary_data(event_type, schema, media, data)
        return attributes, data
    if "data" not in event:
        raise Invalid(event_type, [SchemaError("", "the event has no data")])
    value = event["data"]
    if not _is_json(media):
        if not isinstance(value, str):
            raise _bad(f"data of type {content_type} must be a string (or use data_base64)")
        raise Invalid(event_type, [SchemaError("", f"a {schema.kind} event type takes JSON data")])
    errors = schema.check(value)
    if errors:
        raise Invalid(event_type, errors)
    attributes["datacontenttype"] = content_type
    return attributes, orjson.dumps(value)


def _check_binary_data(event_type: str, schema: EventSchema, media: str, data: bytes) -> None:
    if media in AVRO_CONTENT_TYPES:
        errors = schema.check_binary(data)
    elif _is_json(media) or not media:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _bad(f"the data is not JSON: {exc}") from None
        errors = schema.check(value)
    else:
        raise Refused(
            415,
            "unsupported-media-type",
            "Unsupported data type",
            f"event type {event_type!r} takes JSON data (application/json) or Avro "
            f"(application/avro), not {media}",
        )
    if errors:
        raise Invalid(event_type, errors)


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json") or media == "text/json"


def _check_attributes(attributes: dict[str, str], event_type: str, prefix: str) -> None:
    for name in _REQUIRED:
        if not attributes.get(name):
            raise _bad(f"the required attribute {prefix}{name} is missing or empty")
    if attributes["specversion"] != "1.0":
        raise _bad(f"{prefix}specversion {attributes['specversion']!r} is not supported; use 1.0")
    if attributes["type"] != event_type:
        raise _bad(
            f"{prefix}type {attributes['type']!r} differs from the type in the path {event_type!r}"
        )
    if len(attributes["id"]) > 256:
        raise _bad(f"{prefix}id is longer than 256 characters")


def _time(value: str | None) -> int:
    if value is None:
        return now_ms()
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise _bad(f"time {value!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise _bad(f"time {value!r} has no time zone (RFC 3339 needs one)")
    return int(moment.timestamp() * 1000)


def _bad(detail: str) -> Refused:
    return Refused(400, "bad-event", "Malformed event", detail)


def _invalid(head: RequestHead, invalid: Invalid) -> tuple[int, Headers, bytes]:
    first = invalid.errors[0]
    where = f"at {first.pointer}" if first.pointer else "the data"
    headers, body = problem_parts(
        422,
        "invalid-event",
        "Event does not match its schema",
        f"event {invalid.event_type!r}: {where}: {first.message}",
        head.cid,
        instance=head.path,
        errors=[e.as_dict() for e in invalid.errors],
    )
    return 422, headers, body
